// shoal-bench-scheduler-floor: the Scheduler gRPC service with no scheduling
// in it, to measure what gRPC alone costs under bench/scheduler's load
// (bench/README.md, "scheduler"; `bench/scheduler/run --floor`).
//
// The same transport as shoal-scheduler (callback API, the same channel
// arguments), but every answer is made on the gRPC thread that read the
// event, with nothing behind it: no owner thread, no registry, no parent
// choice. A task's first Register gets FetchFromOrigin for every piece; any
// other gets every piece's digest and the task's first 8 peers as parents
// (the messages shoal-scheduler sends a newcomer); a PieceFailed gets the
// parents again; other events are read and dropped. It sends far fewer
// messages than a scheduler (no re-scoring, no digest batches), so its
// decision latency is a floor for any scheduler on this gRPC and machine,
// not a competitor.

#include <absl/synchronization/mutex.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "shoal/v1/scheduler.grpc.pb.h"

namespace {

namespace v1 = shoal::v1;

// What the floor remembers of a task: its first 8 peers in order of
// registration (the first is the source) and their piece-server addresses.
struct task_info {
  std::vector<std::pair<std::string, std::string>> peers;  // host id, addr
};

class tasks {
 public:
  void add_host(const v1::Host& h) {
    std::lock_guard l(mu_);
    addrs_[h.id()] = h.peer_addr();
  }

  // Registers r's host on its task and lists the task's first 8 peers in
  // `parents`; true when it is the task's first peer.
  bool join(const v1::Register& r, v1::Parents* parents) {
    std::lock_guard l(mu_);
    auto& t = tasks_[r.task_id()];
    const bool first = t.peers.empty();
    for (std::size_t i = 0; i < t.peers.size() && i < 8; ++i) {
      auto* p = parents->add_parents();
      p->set_host_id(t.peers[i].first);
      p->set_addr(t.peers[i].second);
      p->set_source(i == 0);
    }
    if (t.peers.size() < 8) {
      auto it = addrs_.find(r.host_id());
      t.peers.emplace_back(r.host_id(), it == addrs_.end() ? std::string() : it->second);
    }
    return first;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> addrs_;
  std::map<std::string, task_info> tasks_;
};

class stream final : public grpc::ServerBidiReactor<v1::PeerEvent, v1::Decision> {
 public:
  explicit stream(tasks& ts) : tasks_(ts) { StartRead(&in_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      std::unique_lock l(mu_);
      read_ended_ = true;
      if (!writing_) finish(l);
      return;
    }
    if (in_.has_register_()) {
      const auto& r = in_.register_();
      const std::uint32_t len = r.piece_length() == 0 ? 1 : r.piece_length();
      const auto n = static_cast<std::uint32_t>((r.content_length() + len - 1) / len);
      parents_.Clear();
      if (tasks_.join(r, &parents_)) {
        v1::Decision d;
        for (std::uint32_t i = 0; i < n; ++i) d.mutable_from_origin()->add_pieces(i);
        send(std::move(d));
      } else {
        v1::Decision digests;
        for (std::uint32_t i = 0; i < n; ++i) {
          auto* pd = digests.mutable_digests()->add_digests();
          pd->set_index(i);
          pd->set_sha256(std::string(64, '0'));
        }
        send(std::move(digests));
        send(parents_);
      }
    } else if (in_.has_piece_failed()) {
      send(parents_);
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock l(mu_);
    queue_.pop_front();
    if (!ok) queue_.clear();
    if (!queue_.empty()) {
      auto* next = &queue_.front();
      l.unlock();
      StartWrite(next);
      return;
    }
    writing_ = false;
    if (read_ended_) finish(l);
  }

  void OnDone() override { delete this; }

 private:
  void send(v1::Decision d) {
    std::unique_lock l(mu_);
    queue_.push_back(std::move(d));
    if (writing_) return;
    writing_ = true;
    auto* next = &queue_.front();
    l.unlock();
    StartWrite(next);
  }
  void send(const v1::Parents& p) {
    v1::Decision d;
    *d.mutable_parents() = p;
    send(std::move(d));
  }
  void finish(std::unique_lock<std::mutex>& l) {
    if (finished_) return;
    finished_ = true;
    l.unlock();
    Finish(grpc::Status::OK);
  }

  tasks& tasks_;
  v1::PeerEvent in_;
  v1::Parents parents_;  // read side only
  std::mutex mu_;
  std::deque<v1::Decision> queue_;  // front is being written while writing_
  bool writing_ = false;
  bool read_ended_ = false;
  bool finished_ = false;
};

class service final : public v1::Scheduler::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::PeerEvent, v1::Decision>* AnnouncePeer(
      grpc::CallbackServerContext* /*ctx*/) override {
    return new stream(tasks_);
  }
  grpc::ServerUnaryReactor* AnnounceHost(grpc::CallbackServerContext* ctx,
                                         const v1::AnnounceHostRequest* req,
                                         v1::AnnounceHostResponse* resp) override {
    tasks_.add_host(req->host());
    resp->set_announce_interval_seconds(5);
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

 private:
  tasks tasks_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoal-bench-scheduler-floor: the Scheduler gRPC service with no scheduling in it"};
  std::string listen = "127.0.0.1:7410";
  app.add_option("--listen", listen, "gRPC address")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // As in shoal-scheduler: Debian's Abseil checks every absl::Mutex gRPC
  // takes for deadlocks unless told not to.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // gRPC's threads inherit it

  service svc;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&svc);
  // As shoal-scheduler (scheduler/service/service.cc).
  b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20'000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  b.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto server = b.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "cannot listen on %s (address in use or invalid: pick another --listen)\n",
                 listen.c_str());
    return 1;
  }
  std::fprintf(stderr, "floor scheduler listening on %s\n", listen.c_str());
  int sig = 0;
  sigwait(&sigs, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
