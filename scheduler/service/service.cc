#include "scheduler/service/service.h"

#include <grpcpp/grpcpp.h>
#include <pthread.h>

#include <boost/asio/post.hpp>
#include <future>
#include <utility>

#include "common/log.h"

namespace shoal::scheduler {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static auto l = shoal::logger("scheduler");
  return l;
}

grpc::Status to_status(const error& e) {
  if (e.is(errc::invalid_argument)) return {grpc::StatusCode::INVALID_ARGUMENT, e.message};
  if (e.is(errc::not_found)) return {grpc::StatusCode::NOT_FOUND, e.message};
  return {grpc::StatusCode::INTERNAL, e.message};
}

}  // namespace

// One AnnouncePeer stream. The owner alone runs the engine for it; its
// outgoing queue is shared with whoever writes (the writer thread starts a
// write on an idle stream, gRPC's OnWriteDone the next one), under `mu`.
struct service::stream_state {
  stream_id id{};
  peer_reactor* reactor = nullptr;  // call it only under mu and while !finished

  // Events read but not yet handled by the owner (bounds the read-ahead).
  std::atomic<std::uint32_t> unhandled{0};

  std::mutex mu;
  // --- guarded by mu
  std::deque<v1::Decision> queue;
  bool writing = false;   // a writer owns `current` and will drain the queue
  bool closing = false;   // finish once the queue is written
  bool broken = false;    // a write failed: nothing more is written
  bool finished = false;  // Finish was called: never touch reactor again
  grpc::Status final_status;
  // --- only the writer (writing == true) touches it; must outlive its write
  v1::Decision current;

  // --- owner thread only
  bool closed = false;  // the owner asked to finish it: no more engine events
  bool engine_told = false;
};

// Events a stream may have read ahead of the owner: reads are restarted from
// OnReadDone (not an owner round trip per event) up to this many; the owner
// resumes reading when it catches up.
constexpr std::uint32_t kReadAhead = 8;

class service::peer_reactor final
    : public grpc::ServerBidiReactor<v1::PeerEvent, v1::Decision> {
 public:
  peer_reactor(service& svc, std::shared_ptr<stream_state> st)
      : svc_(svc), st_(std::move(st)) {}

  // Starts the next read unless the stream is finished. Any thread.
  void read_next() {
    std::lock_guard lk(st_->mu);
    if (!st_->finished) StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      auto ev = std::make_shared<v1::PeerEvent>();
      ev->Swap(&in_);
      const bool more = st_->unhandled.fetch_add(1) + 1 < kReadAhead;
      svc_.events_waiting_.fetch_add(1, std::memory_order_relaxed);
      asio::post(svc_.io_, [svc = &svc_, st = st_, ev, received = steady::now()] {
        svc->on_read(st, *ev, received);
      });
      if (more) read_next();
    } else {
      asio::post(svc_.io_, [svc = &svc_, st = st_] { svc->on_read_end(st); });
    }
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      {
        std::lock_guard lk(st_->mu);
        st_->broken = true;
        st_->queue.clear();
      }
      // The engine must forget the peer; the stream is finished below if
      // the owner had already asked for it, or when the owner learns of this.
      asio::post(svc_.io_, [svc = &svc_, st = st_] { svc->on_write_failed(st); });
    }
    svc_.write_next(*st_);
  }
  void OnCancel() override {
    asio::post(svc_.io_, [svc = &svc_, st = st_] { svc->on_cancel(st); });
  }
  void OnDone() override {
    asio::post(svc_.io_, [svc = &svc_, st = st_] { svc->on_done(st); });
    delete this;
  }

 private:
  service& svc_;
  std::shared_ptr<stream_state> st_;
  v1::PeerEvent in_;
};

class service::grpc_service final : public v1::Scheduler::CallbackService {
 public:
  explicit grpc_service(service& svc) : svc_(svc) {}

  grpc::ServerBidiReactor<v1::PeerEvent, v1::Decision>* AnnouncePeer(
      grpc::CallbackServerContext* /*ctx*/) override {
    auto st = std::make_shared<stream_state>();
    st->id = stream_id{svc_.next_stream_.fetch_add(1, std::memory_order_relaxed)};
    auto* r = new peer_reactor(svc_, st);
    st->reactor = r;
    // The owner learns of the stream before its first event can arrive.
    asio::post(svc_.io_, [svc = &svc_, st] { svc->on_stream_open(st); });
    r->read_next();
    return r;
  }

  grpc::ServerUnaryReactor* AnnounceHost(grpc::CallbackServerContext* ctx,
                                         const v1::AnnounceHostRequest* req,
                                         v1::AnnounceHostResponse* resp) override {
    return unary(ctx, [svc = &svc_, req, resp](engine& e) -> grpc::Status {
      auto out = e.announce_host(req->host());
      if (!out) return to_status(out.error());
      *resp = std::move(*out);
      // Seeds get their preheat jobs with the heartbeat (scheduler/README.md).
      if (req->host().seed()) svc->preheat_.assignments(req->host().id(), *resp);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* StatTask(grpc::CallbackServerContext* ctx,
                                     const v1::StatTaskRequest* req,
                                     v1::TaskInfo* resp) override {
    return unary(ctx, [req, resp](engine& e) -> grpc::Status {
      auto out = e.stat_task(task_id(req->task_id()));
      if (!out) return to_status(out.error());
      *resp = std::move(*out);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ListHosts(grpc::CallbackServerContext* ctx,
                                      const v1::ListHostsRequest* /*req*/,
                                      v1::ListHostsResponse* resp) override {
    return unary(ctx, [resp](engine& e) {
      *resp = e.list_hosts();
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* ctx,
                                      const v1::ListTasksRequest* /*req*/,
                                      v1::ListTasksResponse* resp) override {
    return unary(ctx, [resp](engine& e) {
      *resp = e.list_tasks();
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* LeaveHost(grpc::CallbackServerContext* ctx,
                                      const v1::LeaveHostRequest* req,
                                      v1::LeaveHostResponse* /*resp*/) override {
    return unary(ctx, [req](engine& e) {
      if (req->host_id().empty())
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "LeaveHost without host_id");
      e.leave_host(host_id(req->host_id()));
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* Preheat(grpc::CallbackServerContext* ctx,
                                    const v1::PreheatRequest* req,
                                    v1::PreheatJob* resp) override {
    return unary(ctx, [svc = &svc_, req, resp](engine& /*e*/) {
      auto out = svc->preheat_.start(*req);
      if (!out)
        return grpc::Status(out.error().is(errc::invalid_argument)
                                ? grpc::StatusCode::INVALID_ARGUMENT
                                : grpc::StatusCode::FAILED_PRECONDITION,
                            out.error().message);
      *resp = std::move(*out);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* GetPreheat(grpc::CallbackServerContext* ctx,
                                       const v1::GetPreheatRequest* req,
                                       v1::PreheatJob* resp) override {
    return unary(ctx, [svc = &svc_, req, resp](engine& /*e*/) {
      auto out = svc->preheat_.get(req->id());
      if (!out) return to_status(out.error());
      *resp = std::move(*out);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ListPreheats(grpc::CallbackServerContext* ctx,
                                         const v1::ListPreheatsRequest* /*req*/,
                                         v1::ListPreheatsResponse* resp) override {
    return unary(ctx, [svc = &svc_, resp](engine& /*e*/) {
      *resp = svc->preheat_.list();
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ReportPreheat(grpc::CallbackServerContext* ctx,
                                          const v1::PreheatReport* req,
                                          v1::ReportPreheatResponse* resp) override {
    return unary(ctx, [svc = &svc_, req, resp](engine& /*e*/) {
      resp->set_known(svc->preheat_.report(*req));
      return grpc::Status::OK;
    });
  }

 private:
  // Runs f on the owner thread and finishes the call with its status. The
  // request and response stay valid until Finish.
  template <class F>
  grpc::ServerUnaryReactor* unary(grpc::CallbackServerContext* ctx, F f) {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    asio::post(svc_.io_, [svc = &svc_, r, f = std::move(f)]() mutable {
      grpc::Status st = f(svc->engine_);
      svc->after_engine();
      r->Finish(std::move(st));
    });
    return r;
  }

  service& svc_;
};

service::service(asio::io_context& io, engine_options eopts, service_options sopts,
                 const clock& clk, metrics::registry& reg, std::uint64_t seed)
    : io_(io),
      opts_(std::move(sopts)),
      clock_(clk),
      metrics_(reg),
      engine_(eopts, clk, *this, metrics_, seed),
      preheat_(opts_.preheat, engine_, clk, seed ^ 0x9e3779b97f4a7c15ull),
      grpc_service_(std::make_unique<grpc_service>(*this)),
      tick_timer_(io),
      flush_timer_(io),
      sweep_timer_(io),
      election_timer_(io) {}

service::~service() { stop_writer(); }

result<void> service::start() {
  grpc::ServerBuilder b;
  b.AddListeningPort(opts_.listen, grpc::InsecureServerCredentials(), &port_);
  // A second scheduler on the same port must fail, not share it silently.
  b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  b.RegisterService(grpc_service_.get());
  // Notice dead daemons (their peers must go) without waiting for the host TTL.
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20'000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  // No bandwidth-delay probing: it pings each connection to grow its
  // receive window for bulk uploads, and daemons send the scheduler small
  // events. Off, bench/scheduler absorbed ~5% more events per second for
  // the same CPU (19,500 against 18,400 in 3 interleaved pairs).
  b.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  server_ = b.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    return error(errc::invalid_argument,
                 "scheduler: cannot listen on " + opts_.listen +
                     " (address in use or invalid: pick another --listen)");
  }
  writer_work_.emplace(writer_io_.get_executor());
  writer_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sched-writer");
    writer_io_.run();
  });
  asio::post(io_, [this] { arm_tick(); });
  log()->info("scheduler gRPC listening on {} (port {})", opts_.listen, port_);
  return ok();
}

void service::shutdown(duration grace) {
  if (!server_ || stopped_) return;
  stopped_ = true;
  std::promise<void> told;
  asio::post(io_, [this, &told] {
    shutting_down_ = true;
    tick_timer_.cancel();
    sweep_timer_.cancel();
    flush_timer_.cancel();
    election_timer_.cancel();
    for (auto& [id, st] : streams_) {
      if (st->closed) continue;
      v1::Decision d;
      d.mutable_abort()->set_reason(v1::Abort::SHUTDOWN);
      d.mutable_abort()->set_message(
          "the scheduler is shutting down: keep your pieces and register again");
      metrics_.count(d);
      enqueue(*st, std::move(d));
      st->engine_told = true;  // the engine is going away with everything it knows
      finish_after_flush(*st, grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                           "scheduler shutting down"));
    }
    told.set_value();
  });
  told.get_future().wait();
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  stop_writer();
  log()->info("scheduler gRPC stopped");
}

void service::stop_writer() {
  if (!writer_thread_.joinable()) return;
  writer_work_.reset();
  writer_thread_.join();
}

// ---------------------------------------------------------------- owner thread

void service::on_stream_open(const std::shared_ptr<stream_state>& st) {
  streams_[static_cast<std::uint64_t>(st->id)] = st;
}

void service::on_read(const std::shared_ptr<stream_state>& st, const v1::PeerEvent& ev,
                      steady::time_point received) {
  events_waiting_.fetch_sub(1, std::memory_order_relaxed);
  handle_read(*st, ev, received);
  // This reader had stopped at kReadAhead unhandled events: resume it.
  if (st->unhandled.fetch_sub(1) == kReadAhead && !st->closed) st->reactor->read_next();
}

void service::handle_read(stream_state& st, const v1::PeerEvent& ev, steady::time_point received) {
  if (st.closed) return;
  if (shutting_down_) {
    v1::Decision d;
    d.mutable_abort()->set_reason(v1::Abort::SHUTDOWN);
    d.mutable_abort()->set_message("the scheduler is shutting down: register again later");
    enqueue(st, std::move(d));
    st.engine_told = true;
    finish_after_flush(st, grpc::Status(grpc::StatusCode::UNAVAILABLE, "scheduler shutting down"));
    return;
  }
  engine_.on_event(st.id, ev);
  metrics_.decision_latency.observe(std::chrono::duration<double>(steady::now() - received).count());
  after_engine();
}

void service::on_read_end(const std::shared_ptr<stream_state>& st) {
  // The daemon closed its side (or the stream broke): the peer is gone.
  tell_engine_ended(*st);
  finish_after_flush(*st, grpc::Status::OK);
}

void service::on_write_failed(const std::shared_ptr<stream_state>& st) {
  // The stream is broken: nothing more can be written, finish now.
  tell_engine_ended(*st);
  finish_after_flush(*st, grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
}

void service::on_cancel(const std::shared_ptr<stream_state>& st) {
  tell_engine_ended(*st);
  {
    std::lock_guard lk(st->mu);
    st->queue.clear();
  }
  finish_after_flush(*st, grpc::Status::CANCELLED);
}

void service::on_done(const std::shared_ptr<stream_state>& st) {
  tell_engine_ended(*st);
  streams_.erase(static_cast<std::uint64_t>(st->id));
}

void service::tell_engine_ended(stream_state& st) {
  if (st.engine_told) return;
  st.engine_told = true;
  if (shutting_down_) return;
  engine_.on_stream_end(st.id);
  after_engine();
}

void service::finish_after_flush(stream_state& st, grpc::Status status) {
  if (st.closed) return;
  st.closed = true;
  bool kick = false;
  {
    std::lock_guard lk(st.mu);
    if (st.closing || st.finished) return;
    st.closing = true;
    st.final_status = std::move(status);
    kick = !st.writing;
    st.writing = true;
  }
  if (kick) kick_writer(st);
}

void service::enqueue(stream_state& st, v1::Decision d) {
  bool kick = false;
  {
    std::lock_guard lk(st.mu);
    if (st.closing || st.finished || st.broken) return;
    st.queue.push_back(std::move(d));
    kick = !st.writing;
    st.writing = true;
  }
  if (kick) kick_writer(st);
}

// An idle stream got something to write (or to finish): the writer thread
// starts it, so the owner never pays for grpc_call_start_batch.
void service::kick_writer(stream_state& st) {
  auto sp = streams_.find(static_cast<std::uint64_t>(st.id));
  if (sp == streams_.end()) return;
  bool post = false;
  {
    std::lock_guard lk(kick_mu_);
    post = kicks_.empty();
    kicks_.push_back(sp->second);
  }
  if (post) asio::post(writer_io_, [this] { drain_kicks(); });
}

void service::drain_kicks() {
  std::vector<std::shared_ptr<stream_state>> kicks;
  {
    std::lock_guard lk(kick_mu_);
    kicks.swap(kicks_);
  }
  for (const auto& st : kicks) write_next(*st);
}

// Writes the next queued decision, or finishes a closing stream whose queue
// is written. Called by the writer that owns `writing` (the writer thread
// after a kick, or gRPC's OnWriteDone); one write in flight per stream keeps
// the order.
void service::write_next(stream_state& st) {
  std::unique_lock lk(st.mu);
  if (st.finished) {
    st.writing = false;
    return;
  }
  if (!st.queue.empty() && !st.broken) {
    st.current = std::move(st.queue.front());
    st.queue.pop_front();
    // No buffer_hint even when more is queued: gRPC completes a buffered
    // write only when something flushes the connection, and the next write
    // waits for that completion (measured: a few Registers' Parents waited
    // for the host's next AnnounceHost, ~5 s).
    lk.unlock();
    st.reactor->StartWrite(&st.current);
    return;
  }
  st.writing = false;
  if (!st.closing) return;
  st.finished = true;
  st.reactor->Finish(st.final_status);  // under mu: no read_next can start meanwhile
}

void service::send(stream_id s, v1::Decision d) {
  auto it = streams_.find(static_cast<std::uint64_t>(s));
  if (it == streams_.end()) return;
  stream_state& st = *it->second;
  if (st.closed) return;
  enqueue(st, std::move(d));
}

void service::close(stream_id s) {
  auto it = streams_.find(static_cast<std::uint64_t>(s));
  if (it == streams_.end()) return;
  stream_state& st = *it->second;
  st.engine_told = true;  // the engine closed it: it has already forgotten the stream
  finish_after_flush(st, grpc::Status::OK);
}

void service::after_engine() {
  if (shutting_down_) return;
  arm_sweep();
  if (!election_armed_) {
    if (auto due = engine_.next_election()) {
      election_armed_ = true;
      election_timer_.expires_after(std::max(duration::zero(), *due - clock_.now()));
      election_timer_.async_wait([this](const boost::system::error_code& ec) {
        election_armed_ = false;
        if (ec || shutting_down_) return;
        engine_.run_due_elections();
        after_engine();
      });
    }
  }
  if (flush_armed_) return;
  auto due = engine_.next_digest_flush();
  if (!due) return;
  flush_armed_ = true;
  const duration delay = std::max(duration::zero(), *due - clock_.now());
  flush_timer_.expires_after(delay);
  flush_timer_.async_wait([this](const boost::system::error_code& ec) {
    flush_armed_ = false;
    if (ec || shutting_down_) return;
    engine_.flush_due_digests();
    after_engine();
  });
}

void service::arm_tick() {
  if (shutting_down_) return;
  tick_timer_.expires_after(opts_.tick_interval);
  tick_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || shutting_down_) return;
    engine_.maintain();
    preheat_.tick();
    after_engine();
    arm_tick();
  });
}

// Children queued for re-scoring (by an event or the tick) are re-scored in
// slices, the first one a sweep pause after they were queued.
void service::arm_sweep() {
  if (sweeping_ || shutting_down_ || engine_.rescores_queued() == 0) return;
  sweeping_ = true;
  sweep_timer_.expires_after(opts_.sweep_pause);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    sweeping_ = false;
    if (ec) return;
    sweep_slice();
  });
}

// One slice of the engine's re-scheduling sweep (a few children at a time
// until the slice's time is used), then a pause for the events queued
// meanwhile and the gRPC threads.
void service::sweep_slice() {
  if (shutting_down_) return;
  // Events come first: a slice stops early when some are waiting (after one
  // chunk, so the sweep still moves on a saturated owner).
  const auto until = std::chrono::steady_clock::now() + opts_.sweep_slice;
  bool more = engine_.sweep(8);
  while (more && events_waiting_.load(std::memory_order_relaxed) == 0 &&
         std::chrono::steady_clock::now() < until)
    more = engine_.sweep(8);
  after_engine();  // arms the next slice if more is queued
}

}  // namespace shoal::scheduler
