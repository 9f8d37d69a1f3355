#pragma once
// The daemon's side of the control plane (DESIGN §3, scheduler/README.md):
// gRPC channels to every configured scheduler, AnnounceHost heartbeats to all
// of them, and one AnnouncePeer stream per task to the scheduler the task id
// rendezvous-hashes to.
//
// Threading: gRPC runs reactions on its own threads; every callback handed
// to this module is posted to the daemon's I/O executor, where all task state
// lives. peer_stream::send/close may be called from the I/O thread at any time.

#include <grpcpp/grpcpp.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "shoal/v1/scheduler.grpc.pb.h"

namespace shoal::transfer {

// One AnnouncePeer stream (a ClientBidiReactor): one write in flight with a
// queue behind it, one read always pending. Decisions and the end of the
// stream are delivered on the I/O executor.
class peer_stream : public grpc::ClientBidiReactor<v1::PeerEvent, v1::Decision> {
 public:
  using decision_fn = std::function<void(v1::Decision)>;
  using end_fn = std::function<void(grpc::Status)>;
  static std::shared_ptr<peer_stream> open(v1::Scheduler::Stub& stub,
                                           boost::asio::any_io_executor ex, decision_fn on_decision,
                                           end_fn on_end);
  // Queues an event (dropped once the stream has ended).
  void send(v1::PeerEvent ev);
  // Ends the stream from our side at once (queued events may be lost).
  void close();
  // Half-closes after every queued event is written (WritesDone); the
  // scheduler then drops the peer and ends the stream.
  void close_after_writes();

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& s) override;
  void OnWritesDoneDone(bool) override {}

 private:
  peer_stream(boost::asio::any_io_executor ex, decision_fn d, end_fn e);
  grpc::ClientContext ctx_;
  v1::Decision in_;
  boost::asio::any_io_executor ex_;
  decision_fn on_decision_;
  end_fn on_end_;
  std::mutex mu_;
  std::deque<v1::PeerEvent> queue_;
  bool writing_ = false;
  bool closed_ = false;
  bool hold_removed_ = false;
  bool half_close_ = false;     // WritesDone once the queue is empty
  bool writes_done_ = false;
  std::shared_ptr<peer_stream> self_;  // keeps the reactor alive until OnDone
};

class scheduler_client {
 public:
  // Fills the host record (id, address, capacity, load) for AnnounceHost.
  using host_fn = std::function<v1::Host()>;
  scheduler_client(boost::asio::any_io_executor ex, std::vector<std::string> addrs, host_fn host);
  ~scheduler_client();

  // The scheduler a task's stream goes to: highest rendezvous hash of
  // (address, task id) over the configured list.
  std::size_t pick(const std::string& task_id) const;
  const std::string& address(std::size_t i) const { return addrs_[i]; }
  // AnnounceHost to scheduler i; true when it answered.
  boost::asio::awaitable<bool> announce(std::size_t i);
  // Heartbeats to every scheduler until stop().
  void start();
  void stop();
  // Opens an AnnouncePeer stream to scheduler i.
  std::shared_ptr<peer_stream> open(std::size_t i, peer_stream::decision_fn on_decision,
                                    peer_stream::end_fn on_end);
  // LeaveHost to every scheduler (blocking, short deadline; call after the
  // I/O loop stopped, at shutdown).
  void leave_blocking();
  // Preheat jobs that come with heartbeat answers (seed hosts; see
  // daemon/transfer/preheat.h): called on the I/O executor with the index of
  // the scheduler that sent the job.
  using preheat_fn = std::function<void(std::size_t, const v1::PreheatAssignment&)>;
  void on_preheat(preheat_fn f) { on_preheat_ = std::move(f); }
  v1::Scheduler::Stub& stub(std::size_t i) { return *stubs_[i]; }
  std::size_t size() const { return addrs_.size(); }

 private:
  boost::asio::awaitable<void> heartbeat_loop();

  boost::asio::any_io_executor ex_;
  std::vector<std::string> addrs_;
  host_fn host_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::Scheduler::Stub>> stubs_;
  std::uint32_t interval_s_ = 5;
  bool stopped_ = false;
  std::shared_ptr<boost::asio::steady_timer> sleep_;
  preheat_fn on_preheat_;
};

}  // namespace shoal::transfer
