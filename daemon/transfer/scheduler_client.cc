#include "daemon/transfer/scheduler_client.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/log.h"
#include "common/sha256.h"

namespace shoal::transfer {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;

namespace {
auto log() { return logger("scheduler-client"); }
}  // namespace

peer_stream::peer_stream(asio::any_io_executor ex, decision_fn d, end_fn e)
    : ex_(std::move(ex)), on_decision_(std::move(d)), on_end_(std::move(e)) {}

std::shared_ptr<peer_stream> peer_stream::open(v1::Scheduler::Stub& stub,
                                               asio::any_io_executor ex, decision_fn on_decision,
                                               end_fn on_end) {
  std::shared_ptr<peer_stream> s(new peer_stream(std::move(ex), std::move(on_decision),
                                                 std::move(on_end)));
  s->self_ = s;
  stub.async()->AnnouncePeer(&s->ctx_, s.get());
  s->StartRead(&s->in_);
  // Held until the read side ends, so OnDone cannot run while send() may
  // still start a write.
  s->AddHold();
  s->StartCall();
  return s;
}

void peer_stream::send(v1::PeerEvent ev) {
  std::lock_guard lock(mu_);
  if (closed_ || half_close_) return;
  queue_.push_back(std::move(ev));
  log()->trace("stream {}: send (writing={})", static_cast<void*>(this), writing_);
  if (!writing_) {
    writing_ = true;
    StartWrite(&queue_.front());
  }
}

void peer_stream::close_after_writes() {
  std::lock_guard lock(mu_);
  if (closed_ || writes_done_) return;
  half_close_ = true;
  if (!writing_) {
    writes_done_ = true;
    StartWritesDone();
  }
}

void peer_stream::close() {
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  ctx_.TryCancel();
}

void peer_stream::OnWriteDone(bool ok) {
  log()->trace("stream {}: write done ok={}", static_cast<void*>(this), ok);
  std::lock_guard lock(mu_);
  queue_.pop_front();
  if (ok && !closed_ && !queue_.empty()) {
    StartWrite(&queue_.front());
  } else {
    writing_ = false;
    if (!ok) queue_.clear();
    if (ok && half_close_ && !writes_done_ && !closed_) {
      writes_done_ = true;
      StartWritesDone();
    }
  }
}

void peer_stream::OnReadDone(bool ok) {
  log()->trace("stream {}: read done ok={}", static_cast<void*>(this), ok);
  if (ok) {
    asio::post(ex_, [f = on_decision_, d = in_]() mutable { f(std::move(d)); });
    StartRead(&in_);
    return;
  }
  bool remove = false;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    if (!hold_removed_) remove = hold_removed_ = true;
  }
  if (remove) RemoveHold();
}

void peer_stream::OnDone(const grpc::Status& s) {
  log()->debug("stream {}: done: {}", static_cast<void*>(this), s.error_message());
  asio::post(ex_, [f = on_end_, s] { f(s); });
  auto keep = std::move(self_);  // may free this on return
}

scheduler_client::scheduler_client(asio::any_io_executor ex, std::vector<std::string> addrs,
                                   host_fn host)
    : ex_(std::move(ex)), addrs_(std::move(addrs)), host_(std::move(host)) {
  for (const auto& a : addrs_) {
    grpc::ChannelArguments args;
    // Reconnect quickly after a scheduler restart.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    auto ch = grpc::CreateCustomChannel(a, grpc::InsecureChannelCredentials(), args);
    stubs_.push_back(v1::Scheduler::NewStub(ch));
    channels_.push_back(std::move(ch));
  }
}

scheduler_client::~scheduler_client() = default;

std::size_t scheduler_client::pick(const std::string& task_id) const {
  std::size_t best = 0;
  std::string best_hash;
  for (std::size_t i = 0; i < addrs_.size(); ++i) {
    auto h = sha256_hex(addrs_[i] + "|" + task_id);
    if (i == 0 || h > best_hash) {
      best = i;
      best_hash = h;
    }
  }
  return best;
}

awaitable<bool> scheduler_client::announce(std::size_t i) {
  struct call {
    grpc::ClientContext ctx;
    v1::AnnounceHostRequest req;
    v1::AnnounceHostResponse resp;
    grpc::Status status;
    asio::steady_timer done;
    bool finished = false;
    explicit call(asio::any_io_executor ex) : done(ex, asio::steady_timer::time_point::max()) {}
  };
  auto c = std::make_shared<call>(ex_);
  c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  *c->req.mutable_host() = host_();
  stubs_[i]->async()->AnnounceHost(&c->ctx, &c->req, &c->resp, [c, ex = ex_](grpc::Status s) {
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
  if (!c->status.ok()) {
    log()->debug("AnnounceHost to {}: {}", addrs_[i], c->status.error_message());
    co_return false;
  }
  if (c->resp.announce_interval_seconds() > 0)
    interval_s_ = std::min<std::uint32_t>(c->resp.announce_interval_seconds(), 60);
  if (on_preheat_)
    for (const auto& a : c->resp.preheats()) on_preheat_(i, a);
  co_return true;
}

void scheduler_client::start() { asio::co_spawn(ex_, heartbeat_loop(), asio::detached); }

void scheduler_client::stop() {
  stopped_ = true;
  if (sleep_) sleep_->cancel();
}

awaitable<void> scheduler_client::heartbeat_loop() {
  sleep_ = std::make_shared<asio::steady_timer>(ex_);
  auto sleep = sleep_;
  while (!stopped_) {
    for (std::size_t i = 0; i < addrs_.size() && !stopped_; ++i) co_await announce(i);
    if (stopped_) break;
    sleep->expires_after(std::chrono::seconds(interval_s_));
    auto [ec] = co_await sleep->async_wait(asio::as_tuple(use_awaitable));
    (void)ec;
  }
}

std::shared_ptr<peer_stream> scheduler_client::open(std::size_t i,
                                                    peer_stream::decision_fn on_decision,
                                                    peer_stream::end_fn on_end) {
  return peer_stream::open(*stubs_[i], ex_, std::move(on_decision), std::move(on_end));
}

void scheduler_client::leave_blocking() {
  auto host = host_();
  for (std::size_t i = 0; i < stubs_.size(); ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::LeaveHostRequest req;
    req.set_host_id(host.id());
    v1::LeaveHostResponse resp;
    auto s = stubs_[i]->LeaveHost(&ctx, req, &resp);
    if (!s.ok()) log()->debug("LeaveHost to {}: {}", addrs_[i], s.error_message());
  }
}

}  // namespace shoal::transfer
