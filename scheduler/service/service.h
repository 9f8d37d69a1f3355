#pragma once
// The Scheduler gRPC service (callback API) around the decision engine.
//
// Threading: gRPC reactions never block and never touch scheduler state; they
// post every event to `io` (an io_context run by exactly one thread, the
// owner). The owner runs the engine and queues decisions per stream; the
// writing happens off the owner: a stream's outgoing queue is shared under a
// small per-stream mutex, a write on an idle stream is started by the
// service's writer thread and the next one by gRPC's OnWriteDone (one write
// in flight per stream, so the order is kept). Reads restart from OnReadDone
// up to kReadAhead events the owner has not handled yet. A stream is
// finished by whoever drains its queue once the owner asked for it; a reactor
// is deleted in OnDone, which gRPC calls only after Finish, and nobody calls
// a reactor after Finish (checked under the stream's mutex).

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/metrics.h"
#include "common/result.h"
#include "scheduler/preheat/preheat_manager.h"
#include "scheduler/resource/clock.h"
#include "scheduler/scheduling/engine.h"
#include "scheduler/scheduling/metrics.h"
#include "shoal/v1/scheduler.grpc.pb.h"

namespace grpc {
class Server;
}

namespace shoal::scheduler {

struct service_options {
  std::string listen = "0.0.0.0:7410";  // gRPC address; port 0 picks a free port
  duration tick_interval = std::chrono::seconds(1);
  // The children queued for re-scoring (engine::sweep; by events or the
  // tick) are re-scored from `sweep_pause` after they were queued, in slices
  // of about `sweep_slice` owner time, one every `sweep_slice + sweep_pause`;
  // a slice stops after its first chunk (8 children) when events are
  // waiting: events wait for at most one chunk, and re-scoring takes at most
  // about half the owner thread.
  duration sweep_slice = std::chrono::microseconds(1000);
  duration sweep_pause = std::chrono::microseconds(1000);
  preheat_options preheat;
};

class service final : private decision_sink {
 public:
  // `io` must be run by exactly one thread for as long as the service lives.
  service(boost::asio::io_context& io, engine_options eopts, service_options sopts,
          const clock& clk, metrics::registry& reg, std::uint64_t seed);
  ~service() override;
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  // Binds and starts serving, and starts the engine's timers. Errors name the address.
  result<void> start();
  // The bound port (after start).
  int port() const noexcept { return port_; }
  // Aborts every stream with SHUTDOWN, then shuts the gRPC server down, cancelling calls
  // still open after `grace`. Blocks: call it from a thread other than the owner, while
  // the owner still runs `io`. Must be called before destruction if start() succeeded.
  void shutdown(duration grace);

  scheduler_metrics& metrics() noexcept { return metrics_; }
  // Preheat jobs (scheduler/preheat). Owner thread only: post to `io` first.
  preheat_manager& preheat() noexcept { return preheat_; }
  const engine& decisions() const noexcept { return engine_; }

 private:
  class grpc_service;
  class peer_reactor;
  struct stream_state;
  friend class grpc_service;
  friend class peer_reactor;

  // Owner-thread handlers, posted by the reactors.
  void on_stream_open(const std::shared_ptr<stream_state>& st);
  void on_read(const std::shared_ptr<stream_state>& st, const v1::PeerEvent& ev,
               std::chrono::steady_clock::time_point received);
  void on_read_end(const std::shared_ptr<stream_state>& st);
  void on_write_failed(const std::shared_ptr<stream_state>& st);
  void handle_read(stream_state& st, const v1::PeerEvent& ev,
                   std::chrono::steady_clock::time_point received);
  void on_cancel(const std::shared_ptr<stream_state>& st);
  void on_done(const std::shared_ptr<stream_state>& st);

  // decision_sink (owner thread).
  void send(stream_id s, v1::Decision d) override;
  void close(stream_id s) override;

  void tell_engine_ended(stream_state& st);
  void finish_after_flush(stream_state& st, grpc::Status status);
  // Owner: queues d on st (dropped once it is closing or broken).
  void enqueue(stream_state& st, v1::Decision d);
  void kick_writer(stream_state& st);
  // Writer thread: starts the first write of every kicked stream.
  void drain_kicks();
  // Any writer: the next write of st, or its Finish once closing and written.
  void write_next(stream_state& st);
  void stop_writer();
  void after_engine();
  void arm_tick();
  void sweep_slice();
  void arm_sweep();

  boost::asio::io_context& io_;
  service_options opts_;
  const clock& clock_;
  scheduler_metrics metrics_;
  engine engine_;
  preheat_manager preheat_;
  std::unique_ptr<grpc_service> grpc_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool stopped_ = false;

  // Owner-thread state.
  std::unordered_map<std::uint64_t, std::shared_ptr<stream_state>> streams_;
  boost::asio::steady_timer tick_timer_;
  boost::asio::steady_timer flush_timer_;
  boost::asio::steady_timer sweep_timer_;
  boost::asio::steady_timer election_timer_;  // elections waiting for the origin zone
  bool sweeping_ = false;
  bool flush_armed_ = false;
  bool election_armed_ = false;
  bool shutting_down_ = false;

  std::atomic<std::uint64_t> next_stream_{1};
  // Events read and posted to the owner but not handled yet: the sweep
  // yields to them.
  std::atomic<std::uint64_t> events_waiting_{0};

  // The writer thread (see Threading above) and the streams waiting for it.
  boost::asio::io_context writer_io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
      writer_work_;
  std::thread writer_thread_;
  std::mutex kick_mu_;
  std::vector<std::shared_ptr<stream_state>> kicks_;
};

}  // namespace shoal::scheduler
