// The real gRPC service in-process on 127.0.0.1:0, driven by real gRPC
// clients playing three hosts.

#include <grpcpp/grpcpp.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <thread>

#include "common/metrics.h"
#include "scheduler/resource/clock.h"
#include "scheduler/service/service.h"
#include "shoal/v1/scheduler.grpc.pb.h"
#include "test/unit/scheduler/harness.h"

using namespace shoal::scheduler;
namespace v1 = shoal::v1;
using namespace std::chrono_literals;
using shoal::scheduler::test::kTask;
using shoal::scheduler::test::sha;

namespace {

// Every blocking call in these tests has a deadline, so a bug fails a test
// instead of hanging it.
constexpr auto kDeadline = 20s;

struct running_service {
  explicit running_service(duration tick = 200ms)
      : work(boost::asio::make_work_guard(io)),
        svc(io, engine_options{},
            service_options{.listen = "127.0.0.1:0", .tick_interval = tick, .preheat = {}}, clk,
            reg, 1) {
    REQUIRE(svc.start());
    owner = std::thread([this] { io.run(); });
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(svc.port()),
                                  grpc::InsecureChannelCredentials());
    stub = v1::Scheduler::NewStub(channel);
  }
  ~running_service() {
    svc.shutdown(2s);
    work.reset();
    io.stop();
    owner.join();
  }

  void announce(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kDeadline);
    v1::AnnounceHostRequest req;
    req.mutable_host()->set_id(id);
    req.mutable_host()->set_peer_addr("127.0.0.1:" + std::to_string(7000 + id.size()));
    v1::AnnounceHostResponse resp;
    auto st = stub->AnnounceHost(&ctx, req, &resp);
    REQUIRE(st.ok());
    CHECK(resp.announce_interval_seconds() == 5);
  }
  grpc::Status stat(const std::string& task, v1::TaskInfo& out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kDeadline);
    v1::StatTaskRequest req;
    req.set_task_id(task);
    return stub->StatTask(&ctx, req, &out);
  }
  // Polls StatTask until pred holds (events on different streams are not ordered).
  bool wait_for(const std::function<bool(const v1::TaskInfo&)>& pred) {
    const auto until = std::chrono::steady_clock::now() + kDeadline;
    while (std::chrono::steady_clock::now() < until) {
      v1::TaskInfo info;
      if (stat(kTask, info).ok() && pred(info)) return true;
      std::this_thread::yield();
    }
    return false;
  }

  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work;
  shoal::metrics::registry reg;
  system_clock clk;
  service svc;
  std::thread owner;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Scheduler::Stub> stub;
};

// One host's AnnouncePeer stream.
struct peer_client {
  peer_client(v1::Scheduler::Stub& stub, const std::string& host, bool has_client) {
    ctx.set_deadline(std::chrono::system_clock::now() + kDeadline);
    rw = stub.AnnouncePeer(&ctx);
    v1::PeerEvent ev;
    auto* r = ev.mutable_register_();
    r->set_host_id(host);
    r->set_task_id(kTask);
    r->set_content_length(10 * 4096);
    r->set_piece_length(4096);
    r->set_has_client(has_client);
    REQUIRE(rw->Write(ev));
  }
  // The next decision of kind c (others are kept in `seen`); nullopt if the stream ended.
  std::optional<v1::Decision> next(v1::Decision::DecisionCase c) {
    v1::Decision d;
    while (rw->Read(&d)) {
      if (d.decision_case() == c) return d;
      seen.push_back(d);
    }
    return std::nullopt;
  }
  void write(const v1::PeerEvent& ev) { REQUIRE(rw->Write(ev)); }
  void piece(std::uint32_t i, const std::string& parent = "") {
    v1::PeerEvent ev;
    ev.mutable_piece_finished()->set_index(i);
    ev.mutable_piece_finished()->set_sha256(sha(i));
    ev.mutable_piece_finished()->set_parent_host_id(parent);
    write(ev);
  }

  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<v1::PeerEvent, v1::Decision>> rw;
  std::vector<v1::Decision> seen;
};

std::vector<std::uint32_t> pieces(const v1::Decision& d) {
  return {d.from_origin().pieces().begin(), d.from_origin().pieces().end()};
}

}  // namespace

TEST_CASE("service: a peer short of parents gets a newcomer at once, not at the next tick",
          "[scheduler][service]") {
  running_service s(std::chrono::hours(1));  // no tick during the test
  for (auto h : {"h1", "h2", "h3"}) s.announce(h);
  peer_client p1(*s.stub, "h1", /*has_client=*/true);  // the source
  REQUIRE(p1.next(v1::Decision::kFromOrigin));
  peer_client p2(*s.stub, "h2", /*has_client=*/false);
  auto first = p2.next(v1::Decision::kParents);
  REQUIRE(first);
  REQUIRE(first->parents().parents_size() == 1);
  CHECK(first->parents().parents(0).host_id() == "h1");

  peer_client p3(*s.stub, "h3", /*has_client=*/false);
  REQUIRE(p3.next(v1::Decision::kParents));
  // h3 holds nothing yet, but it is receiving: h2 gets it from the sweep its
  // registration queued.
  auto second = p2.next(v1::Decision::kParents);
  REQUIRE(second);
  std::vector<std::string> got;
  for (const auto& p : second->parents().parents()) got.push_back(p.host_id());
  CHECK(got == std::vector<std::string>{"h1", "h3"});

  // Each daemon leaves; the scheduler ends every stream cleanly.
  for (auto* p : {&p3, &p2, &p1}) {
    p->rw->WritesDone();
    v1::Decision more;
    while (p->rw->Read(&more)) {
    }
    CHECK(p->rw->Finish().ok());
  }
}

TEST_CASE("service: three hosts share one origin read, survive the source leaving, and are "
          "aborted when the blob is poisoned",
          "[scheduler][service]") {
  running_service s;
  for (auto h : {"h1", "h2", "h3"}) s.announce(h);

  peer_client p1(*s.stub, "h1", true);
  auto first = p1.next(v1::Decision::kDigests);
  REQUIRE(first);
  CHECK(first->digests().digests_size() == 0);
  auto fo = p1.next(v1::Decision::kFromOrigin);
  REQUIRE(fo);
  CHECK(pieces(*fo) == std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});

  peer_client p2(*s.stub, "h2", false);
  peer_client p3(*s.stub, "h3", true);
  for (auto* p : {&p2, &p3}) {
    // The source, and h2 for h3 if h2 registered first (it is receiving).
    auto par = p->next(v1::Decision::kParents);
    REQUIRE(par);
    REQUIRE(par->parents().parents_size() >= 1);
    CHECK(par->parents().parents(0).host_id() == "h1");
    CHECK(par->parents().parents(0).source());
    for (int i = 1; i < par->parents().parents_size(); ++i)
      CHECK_FALSE(par->parents().parents(i).source());
    for (const auto& d : p->seen) CHECK_FALSE(d.has_from_origin());
  }

  // The source's digests reach the others.
  p1.piece(0);
  p1.piece(1);
  for (auto* p : {&p2, &p3}) {
    std::set<std::uint32_t> got;
    while (got.size() < 2) {
      auto d = p->next(v1::Decision::kDigests);
      REQUIRE(d);
      for (const auto& x : d->digests().digests()) {
        CHECK(x.sha256() == sha(x.index()));
        got.insert(x.index());
      }
    }
    CHECK(got == std::set<std::uint32_t>{0, 1});
  }

  // h2 fetches piece 0 from h1; then the source goes away.
  p2.piece(0, "h1");
  REQUIRE(s.wait_for([](const v1::TaskInfo& t) {
    for (const auto& p : t.peers())
      if (p.host_id() == "h2") return p.finished_pieces() == 1;
    return false;
  }));
  p1.rw->WritesDone();
  CHECK(p1.rw->Finish().ok());

  // h3 (it has a client) reads from origin only what nobody holds: not 0.
  auto fo3 = p3.next(v1::Decision::kFromOrigin);
  REQUIRE(fo3);
  CHECK(pieces(*fo3) == std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto par2 = p2.next(v1::Decision::kParents);
  REQUIRE(par2);
  REQUIRE(par2->parents().parents_size() == 1);
  CHECK(par2->parents().parents(0).host_id() == "h3");

  // The new source finds the blob does not match its digest: everyone drops it.
  v1::PeerEvent bad;
  bad.mutable_source_finished()->set_verified(false);
  bad.mutable_source_finished()->set_sha256(std::string(64, '0'));
  p3.write(bad);
  for (auto* p : {&p2, &p3}) {
    auto ab = p->next(v1::Decision::kAbort);
    REQUIRE(ab);
    CHECK(ab->abort().reason() == v1::Abort::POISONED);
    v1::Decision more;
    CHECK_FALSE(p->rw->Read(&more));  // the scheduler ends the stream after an Abort
    CHECK(p->rw->Finish().ok());
  }
  v1::TaskInfo gone;
  CHECK(s.stat(kTask, gone).error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(s.svc.metrics().poisoned_tasks.value() == 1);
  CHECK(s.svc.metrics().source_elections.value() == 2);
}

TEST_CASE("service: unary calls, bad input, and shutdown aborts open streams",
          "[scheduler][service]") {
  auto s = std::make_unique<running_service>();
  s->announce("h1");
  {
    grpc::ClientContext ctx;
    v1::AnnounceHostRequest req;  // no host id
    v1::AnnounceHostResponse resp;
    CHECK(s->stub->AnnounceHost(&ctx, req, &resp).error_code() ==
          grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::ListHostsResponse resp;
    REQUIRE(s->stub->ListHosts(&ctx, v1::ListHostsRequest{}, &resp).ok());
    REQUIRE(resp.hosts_size() == 1);
    CHECK(resp.hosts(0).id() == "h1");
    CHECK(resp.last_seen_unix_ms_size() == 1);
  }

  // A stream that does not start with Register is aborted.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kDeadline);
    auto rw = s->stub->AnnouncePeer(&ctx);
    v1::PeerEvent ev;
    ev.mutable_done();
    REQUIRE(rw->Write(ev));
    v1::Decision d;
    REQUIRE(rw->Read(&d));
    CHECK(d.abort().reason() == v1::Abort::INVALID);
    CHECK_FALSE(rw->Read(&d));
  }

  peer_client p(*s->stub, "h1", true);
  REQUIRE(p.next(v1::Decision::kFromOrigin));
  {
    grpc::ClientContext ctx;
    v1::ListTasksResponse resp;
    REQUIRE(s->stub->ListTasks(&ctx, v1::ListTasksRequest{}, &resp).ok());
    REQUIRE(resp.tasks_size() == 1);
    CHECK(resp.tasks(0).task_id() == kTask);
    CHECK(resp.tasks(0).peers(0).source());
  }

  s->svc.shutdown(2s);
  auto ab = p.next(v1::Decision::kAbort);
  REQUIRE(ab);
  CHECK(ab->abort().reason() == v1::Abort::SHUTDOWN);
  CHECK(p.rw->Finish().error_code() == grpc::StatusCode::UNAVAILABLE);
  s.reset();
}

TEST_CASE("service: LeaveHost ends the host's streams", "[scheduler][service]") {
  running_service s;
  s.announce("h1");
  s.announce("h2");
  peer_client p1(*s.stub, "h1", true);
  REQUIRE(p1.next(v1::Decision::kFromOrigin));
  peer_client p2(*s.stub, "h2", true);
  REQUIRE(p2.next(v1::Decision::kParents));
  {
    grpc::ClientContext ctx;
    v1::LeaveHostRequest req;
    req.set_host_id("h1");
    v1::LeaveHostResponse resp;
    REQUIRE(s.stub->LeaveHost(&ctx, req, &resp).ok());
  }
  auto ab = p1.next(v1::Decision::kAbort);
  REQUIRE(ab);
  CHECK(ab->abort().reason() == v1::Abort::HOST_GONE);
  CHECK(p1.rw->Finish().ok());
  // h2 takes over the origin read.
  auto fo = p2.next(v1::Decision::kFromOrigin);
  REQUIRE(fo);
  CHECK(fo->from_origin().pieces_size() == 10);
}
