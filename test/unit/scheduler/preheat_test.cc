// The preheat job manager against a real engine with a manual clock.

#include <catch2/catch.hpp>

#include "scheduler/preheat/preheat_manager.h"
#include "test/unit/scheduler/harness.h"

using namespace shoal::scheduler;
namespace v1 = shoal::v1;
using namespace std::chrono_literals;
using shoal::scheduler::test::fixture;

namespace {

v1::PreheatRequest request(const std::string& ref) {
  v1::PreheatRequest r;
  r.set_reference(ref);
  return r;
}

v1::PreheatReport report(const std::string& job, const std::string& host, const std::string& state,
                         std::uint32_t blobs_done, std::uint64_t bytes_done) {
  v1::PreheatReport r;
  r.set_job_id(job);
  r.set_host_id(host);
  r.set_state(state);
  r.set_manifest_digest("sha256:" + std::string(64, 'c'));
  r.set_blobs_total(3);
  r.set_blobs_done(blobs_done);
  r.set_bytes_total(300);
  r.set_bytes_done(bytes_done);
  return r;
}

std::vector<std::string> assigned(const preheat_manager& pm, const std::string& host) {
  v1::AnnounceHostResponse resp;
  pm.assignments(host, resp);
  std::vector<std::string> out;
  for (const auto& a : resp.preheats()) out.push_back(a.job_id());
  return out;
}

}  // namespace

TEST_CASE("preheat: without an online seed the job is refused with a clear error") {
  fixture f;
  preheat_manager pm({}, f.e, f.clk, 1);
  f.announce("plain");
  auto r = pm.start(request("127.0.0.1:5000/models/x:v1"));
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("no seed host is online") != std::string::npos);
  CHECK(pm.size() == 0);
  // An expired seed does not count either.
  f.announce("seed", {.seed = true});
  f.clk.advance(31s);
  CHECK_FALSE(pm.start(request("127.0.0.1:5000/models/x:v1")));
}

TEST_CASE("preheat: a malformed reference is invalid_argument") {
  fixture f;
  preheat_manager pm({}, f.e, f.clk, 1);
  f.announce("seed", {.seed = true});
  auto r = pm.start(request("Not A Reference!"));
  REQUIRE_FALSE(r);
  CHECK(r.error().is(shoal::errc::invalid_argument));
}

TEST_CASE("preheat: every seed gets the job with its heartbeat until it reports an end") {
  fixture f;
  preheat_manager pm({}, f.e, f.clk, 1);
  f.announce("s1", {.seed = true});
  f.announce("s2", {.seed = true});
  f.announce("n1");
  v1::PreheatRequest req = request("127.0.0.1:5000/models/x:v1");
  req.set_authorization("Basic c2VjcmV0");
  auto job = pm.start(req);
  REQUIRE(job);
  CHECK(job->state() == "pending");
  CHECK(job->seeds_size() == 2);
  const std::string id = job->id();
  CHECK(assigned(pm, "s1") == std::vector<std::string>{id});
  CHECK(assigned(pm, "s2") == std::vector<std::string>{id});
  CHECK(assigned(pm, "n1").empty());
  {
    v1::AnnounceHostResponse resp;
    pm.assignments("s1", resp);
    CHECK(resp.preheats(0).authorization() == "Basic c2VjcmV0");
    CHECK(resp.preheats(0).reference() == "127.0.0.1:5000/models/x:v1");
  }
  // Credentials never appear in what get/list show.
  CHECK(pm.get(id)->DebugString().find("c2VjcmV0") == std::string::npos);

  REQUIRE(pm.report(report(id, "s1", "running", 1, 100)));
  auto j = pm.get(id);
  CHECK(j->state() == "running");
  CHECK(j->blobs_total() == 3);
  CHECK(j->bytes_total() == 300);
  CHECK(j->bytes_done() == 100);
  CHECK(j->manifest_digest() == "sha256:" + std::string(64, 'c'));

  REQUIRE(pm.report(report(id, "s1", "succeeded", 3, 300)));
  CHECK(assigned(pm, "s1").empty());  // done there: no longer sent
  CHECK(pm.get(id)->state() == "running");
  REQUIRE(pm.report(report(id, "s2", "succeeded", 3, 300)));
  j = pm.get(id);
  CHECK(j->state() == "succeeded");
  CHECK(j->bytes_done() == 600);
  CHECK(j->finished_unix_ms() > 0);
  CHECK(assigned(pm, "s2").empty());
  // Unknown jobs or hosts are refused, so the seed stops reporting.
  CHECK_FALSE(pm.report(report("nope", "s1", "running", 0, 0)));
  CHECK_FALSE(pm.report(report(id, "n1", "running", 0, 0)));
  CHECK(pm.list().jobs_size() == 1);
}

TEST_CASE("preheat: one seed failing fails the job and names the seed") {
  fixture f;
  preheat_manager pm({}, f.e, f.clk, 1);
  f.announce("s1", {.seed = true});
  f.announce("s2", {.seed = true});
  auto job = pm.start(request("127.0.0.1:5000/models/x:v1"));
  REQUIRE(job);
  auto rep = report(job->id(), "s1", "failed", 0, 0);
  rep.set_error("manifest v1 from 127.0.0.1:5000/models/x: 404 Not Found");
  REQUIRE(pm.report(rep));
  REQUIRE(pm.report(report(job->id(), "s2", "succeeded", 3, 300)));
  auto j = pm.get(job->id());
  CHECK(j->state() == "failed");
  CHECK(j->error().find("s1: manifest v1") != std::string::npos);
}

TEST_CASE("preheat: a silent seed and an expired seed fail their part") {
  fixture f;
  preheat_options o;
  o.seed_timeout = 60s;
  preheat_manager pm(o, f.e, f.clk, 1);
  f.announce("s1", {.seed = true});
  f.announce("s2", {.seed = true});
  auto job = pm.start(request("127.0.0.1:5000/models/x:v1"));
  REQUIRE(job);
  // s1 keeps reporting and heartbeating; s2 heartbeats but never reports.
  for (int i = 0; i < 13; ++i) {
    f.clk.advance(5s);
    f.announce("s1", {.seed = true});
    f.announce("s2", {.seed = true});
    REQUIRE(pm.report(report(job->id(), "s1", "running", 1, 100)));
    f.e.tick();
    pm.tick();
  }
  auto j = pm.get(job->id());
  REQUIRE(j->seeds_size() == 2);
  CHECK(j->seeds(0).state() == "running");
  CHECK(j->seeds(1).state() == "failed");
  CHECK(j->seeds(1).error().find("sent no progress") != std::string::npos);
  CHECK(j->state() == "running");
  // s1's host expires: its part fails and the job ends.
  f.clk.advance(31s);
  f.e.tick();
  pm.tick();
  j = pm.get(job->id());
  CHECK(j->state() == "failed");
  CHECK(j->seeds(0).error().find("left or expired") != std::string::npos);
}

TEST_CASE("preheat: finished jobs beyond max_jobs are dropped, oldest first") {
  fixture f;
  preheat_options o;
  o.max_jobs = 2;
  preheat_manager pm(o, f.e, f.clk, 1);
  f.announce("s1", {.seed = true});
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto j = pm.start(request("127.0.0.1:5000/models/x:v" + std::to_string(i)));
    REQUIRE(j);
    ids.push_back(j->id());
    REQUIRE(pm.report(report(j->id(), "s1", "succeeded", 3, 300)));
  }
  auto j4 = pm.start(request("127.0.0.1:5000/models/x:v9"));
  REQUIRE(j4);
  CHECK(pm.size() <= 2);
  CHECK_FALSE(pm.get(ids[0]));
  CHECK(pm.get(j4->id()));
  CHECK(pm.list().jobs(0).id() == j4->id());  // newest first
}
