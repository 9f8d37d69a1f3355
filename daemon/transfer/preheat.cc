#include "daemon/transfer/preheat.h"

// GCC 12 reports -Wmismatched-new-delete on every Asio awaitable frame: a known
// false positive (the frame's class-specific operator new/delete do match).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include "common/digest.h"
#include "common/log.h"
#include "common/reference.h"
#include "common/sha256.h"

namespace shoal::transfer {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;

namespace {
auto log() {
  static auto l = logger("preheat");
  return l;
}
constexpr std::size_t kKeptJobs = 256;
constexpr std::size_t kMaxBlobs = 100'000;
}  // namespace

struct preheater::job {
  std::size_t sched = 0;
  v1::PreheatAssignment a;
  std::string state = "running";
  std::string error;
  std::string manifest_digest;
  std::uint32_t blobs_total = 0, blobs_done = 0;
  std::uint64_t bytes_total = 0, bytes_done_finished = 0;
  std::map<std::string, std::shared_ptr<task>> in_flight;  // for progress
  std::chrono::steady_clock::time_point last_report{};
  bool reporting = true;  // false once the scheduler said it does not know the job
  bool report_pending = false;
};

result<std::vector<manifest_blob>> manifest_blobs(std::string_view body, std::string_view what) {
  namespace json = boost::json;
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object())
    return error(errc::upstream_error, std::string(what) + " is not JSON: " + ec.message());
  const auto& o = v.get_object();
  if (o.if_contains("manifests"))
    return error(errc::unsupported, std::string(what) +
                                        " is an index (several manifests); preheat one model "
                                        "manifest (a tag or digest of a single-platform artifact)");
  std::vector<manifest_blob> out;
  auto add = [&](const json::value& d, const char* where) -> result<void> {
    const auto* obj = d.if_object();
    const auto* dg = obj ? obj->if_contains("digest") : nullptr;
    const auto* sz = obj ? obj->if_contains("size") : nullptr;
    if (!dg || !dg->is_string() || !sz || !(sz->is_int64() || sz->is_uint64()) ||
        (sz->is_int64() && sz->as_int64() < 0))
      return error(errc::upstream_error,
                   std::string(what) + ": a " + where + " descriptor lacks digest or size");
    auto parsed = parse_digest(std::string(dg->get_string()));
    if (!parsed)
      return error(errc::upstream_error, std::string(what) + ": " + parsed.error().message);
    out.push_back({parsed->str(), sz->to_number<std::uint64_t>()});
    return ok();
  };
  if (const auto* c = o.if_contains("config")) {
    if (auto r = add(*c, "config"); !r) return std::move(r).error();
  }
  const auto* layers = o.if_contains("layers");
  if (!layers || !layers->is_array())
    return error(errc::upstream_error, std::string(what) + " has no layers list");
  if (layers->get_array().size() > kMaxBlobs)
    return error(errc::too_large, std::string(what) + " lists more than 100000 layers");
  for (const auto& l : layers->get_array())
    if (auto r = add(l, "layer"); !r) return std::move(r).error();
  // The same blob twice is one task.
  std::vector<manifest_blob> uniq;
  for (auto& b : out)
    if (std::none_of(uniq.begin(), uniq.end(), [&](const manifest_blob& u) { return u.digest == b.digest; }))
      uniq.push_back(b);
  return uniq;
}

preheater::preheater(asio::any_io_executor ex, task_manager& tm, source::registry_client& origin,
                     scheduler_client& sched, preheat_options opts)
    : ex_(std::move(ex)), tm_(tm), origin_(origin), sched_(sched), opts_(std::move(opts)) {}

void preheater::on_assignment(std::size_t sched_index, const v1::PreheatAssignment& a) {
  if (stopped_ || a.job_id().empty()) return;
  if (auto it = jobs_.find(a.job_id()); it != jobs_.end()) {
    // Known: if it ended, the scheduler missed the final report.
    if (it->second->state != "running" && it->second->reporting)
      asio::co_spawn(ex_, report(it->second, true), asio::detached);
    return;
  }
  auto j = std::make_shared<job>();
  j->sched = sched_index;
  j->a = a;
  jobs_[a.job_id()] = j;
  order_.push_back(a.job_id());
  forget_old();
  log()->info("preheat {}: fetching every blob of {}", a.job_id(), a.reference());
  asio::co_spawn(ex_, run(j), asio::detached);
}

void preheater::forget_old() {
  while (order_.size() > kKeptJobs) {
    auto it = jobs_.find(order_.front());
    if (it != jobs_.end() && it->second->state == "running") break;
    if (it != jobs_.end()) jobs_.erase(it);
    order_.pop_front();
  }
}

awaitable<void> preheater::run(std::shared_ptr<job> j) {
  co_await report(j, false);
  auto fail = [&](std::string msg) {
    j->state = "failed";
    j->error = std::move(msg);
    log()->warn("preheat {} of {}: {}", j->a.job_id(), j->a.reference(), j->error);
  };
  auto ref = parse_reference(j->a.reference());
  if (!ref) {
    fail(ref.error().message);
    co_await report(j, true);
    co_return;
  }
  source::request_target origin{ref->registry, ref->repository, j->a.authorization()};
  const std::string what = "manifest " + ref->ref() + " of " + ref->registry + "/" + ref->repository;
  auto m = co_await origin_.manifest(
      origin, ref->ref(),
      "application/vnd.oci.image.manifest.v1+json, "
      "application/vnd.docker.distribution.manifest.v2+json",
      false, opts_.max_manifest);
  if (!m) {
    fail(m.error().message);
  } else if (m->status != 200) {
    fail(what + ": the registry answered " + std::to_string(m->status) +
         (m->status == 401 ? " (preheat needs credentials: shoalctl preheat --username ...)"
                           : m->status == 404 ? " (check the reference)" : ""));
  }
  if (j->state != "running") {
    co_await report(j, true);
    co_return;
  }
  j->manifest_digest = m->docker_content_digest.empty() ? "sha256:" + sha256_hex(m->body)
                                                        : m->docker_content_digest;
  if (!ref->digest.empty() && ref->digest != "sha256:" + sha256_hex(m->body)) {
    fail(what + ": the body does not hash to the requested digest");
    co_await report(j, true);
    co_return;
  }
  auto blobs = manifest_blobs(m->body, what);
  if (!blobs) {
    fail(blobs.error().message);
    co_await report(j, true);
    co_return;
  }
  j->blobs_total = static_cast<std::uint32_t>(blobs->size());
  for (const auto& b : *blobs) j->bytes_total += b.size;
  co_await report(j, false);

  // A few blobs at a time; every worker takes the next blob.
  auto next = std::make_shared<std::size_t>(0);
  auto left = std::make_shared<std::size_t>(std::min(opts_.parallel_blobs, blobs->size()));
  asio::steady_timer all_done(ex_, asio::steady_timer::time_point::max());
  auto shared_blobs = std::make_shared<std::vector<manifest_blob>>(std::move(*blobs));
  for (std::size_t w = 0; w < *left; ++w) {
    auto worker = [](preheater* self, std::shared_ptr<job> jj, std::shared_ptr<std::vector<manifest_blob>> bs,
                     std::shared_ptr<std::size_t> nx, source::request_target o) -> awaitable<void> {
      while (*nx < bs->size() && jj->state == "running" && !self->stopped_) {
        manifest_blob b = (*bs)[(*nx)++];
        auto r = co_await self->fetch(jj, b, o);
        if (!r && jj->state == "running") {
          jj->state = "failed";
          jj->error = "blob " + b.digest + ": " + r.error().message;
          log()->warn("preheat {} of {}: {}", jj->a.job_id(), jj->a.reference(), jj->error);
        }
      }
    };
    auto on_end = [left, &all_done](std::exception_ptr) {
      if (--*left == 0) all_done.cancel();
    };
    asio::co_spawn(ex_, worker(this, j, shared_blobs, next, origin), on_end);
  }
  while (*left > 0) {
    auto [ec] = co_await all_done.async_wait(asio::as_tuple(use_awaitable));
    (void)ec;
  }
  if (j->state == "running") {
    if (stopped_) {
      fail("shoald is shutting down");
    } else {
      j->state = "succeeded";
      log()->info("preheat {} of {}: all {} blobs ({} bytes) are here", j->a.job_id(),
                  j->a.reference(), j->blobs_total, j->bytes_total);
    }
  }
  co_await report(j, true);
}

awaitable<result<void>> preheater::fetch(std::shared_ptr<job> j, manifest_blob b,
                                         source::request_target origin) {
  auto d = parse_digest(b.digest);
  if (!d) co_return std::move(d).error();
  bool hit = false;
  auto t = tm_.acquire(*d, b.size, origin, &hit);
  if (!t) co_return std::move(t).error();
  std::shared_ptr<task> tk = *t;
  j->in_flight[b.digest] = tk;
  while (tk->current() == task::state::downloading) {
    co_await tk->wait_change(std::chrono::steady_clock::now() + opts_.report_every);
    if (std::chrono::steady_clock::now() - j->last_report >= opts_.report_every)
      co_await report(j, false);
  }
  j->in_flight.erase(b.digest);
  if (tk->current() == task::state::failed) {
    // wait_piece hands out the task's error.
    auto r = co_await tk->wait_piece(0);
    if (!r) co_return std::move(r).error();
    co_return error(errc::upstream_error, "the download failed");
  }
  ++j->blobs_done;
  j->bytes_done_finished += b.size;
  co_return ok();
}

awaitable<void> preheater::report(std::shared_ptr<job> j, bool final) {
  if (!j->reporting) co_return;
  if (j->report_pending && !final) co_return;  // one in flight is enough for progress
  j->last_report = std::chrono::steady_clock::now();
  struct call {
    grpc::ClientContext ctx;
    v1::PreheatReport req;
    v1::ReportPreheatResponse resp;
    grpc::Status status;
    asio::steady_timer done;
    bool finished = false;
    explicit call(asio::any_io_executor ex) : done(ex, asio::steady_timer::time_point::max()) {}
  };
  for (int attempt = 0; attempt < (final ? 5 : 1); ++attempt) {
    auto c = std::make_shared<call>(ex_);
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    c->req.set_job_id(j->a.job_id());
    c->req.set_host_id(opts_.host_id);
    c->req.set_state(j->state);
    c->req.set_manifest_digest(j->manifest_digest);
    c->req.set_blobs_total(j->blobs_total);
    c->req.set_blobs_done(j->blobs_done);
    c->req.set_bytes_total(j->bytes_total);
    std::uint64_t partial = 0;
    for (const auto& [dg, t] : j->in_flight) {
      if (t->current() == task::state::complete) continue;
      std::uint64_t held = 0;
      for (std::uint32_t i = 0; i < t->piece_count(); ++i)
        if (t->readable(i)) held += t->piece_length();
      partial += std::min<std::uint64_t>(held, t->content_length());
    }
    c->req.set_bytes_done(std::min(j->bytes_done_finished + partial, j->bytes_total));
    c->req.set_error(j->error);
    j->report_pending = true;
    sched_.stub(j->sched).async()->ReportPreheat(&c->ctx, &c->req, &c->resp,
                                                 [c, ex = ex_](grpc::Status s) {
                                                   asio::post(ex, [c, s] {
                                                     c->status = s;
                                                     c->finished = true;
                                                     c->done.cancel();
                                                   });
                                                 });
    while (!c->finished) {
      auto [ec] = co_await c->done.async_wait(asio::as_tuple(use_awaitable));
      (void)ec;
    }
    j->report_pending = false;
    if (c->status.ok()) {
      if (!c->resp.known()) {
        log()->info("preheat {}: the scheduler no longer knows this job; not reporting it",
                    j->a.job_id());
        j->reporting = false;
      }
      co_return;
    }
    log()->debug("ReportPreheat {}: {}", j->a.job_id(), c->status.error_message());
    if (!final) co_return;
    asio::steady_timer wait(ex_);
    wait.expires_after(std::chrono::seconds(1));
    auto [ec] = co_await wait.async_wait(asio::as_tuple(use_awaitable));
    (void)ec;
  }
}

}  // namespace shoal::transfer
