#include "common/rate_limiter.h"

#include <algorithm>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cmath>

namespace shoal {
namespace {

constexpr std::uint64_t kMinBurst = 256ull * 1024;

}  // namespace

rate_limiter::rate_limiter(std::uint64_t bytes_per_second, std::uint64_t burst, clock_fn clock)
    : rate_(bytes_per_second),
      burst_(static_cast<double>(burst != 0 ? burst : std::max(bytes_per_second / 10, kMinBurst))),
      tokens_(burst_),
      clock_(clock ? std::move(clock) : clock_fn([] { return std::chrono::steady_clock::now(); })),
      last_(clock_()) {}

std::chrono::nanoseconds rate_limiter::take(std::uint64_t n) {
  if (rate_ == 0) return std::chrono::nanoseconds{0};
  auto now = clock_();
  // An injected clock could step back; never refill for negative time.
  if (now > last_) {
    double elapsed = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + elapsed * static_cast<double>(rate_));
    last_ = now;
  }
  // Going into debt (instead of refusing) lets a caller move a chunk larger
  // than the burst; the debt is paid back by the wait.
  tokens_ -= static_cast<double>(n);
  if (tokens_ >= 0) return std::chrono::nanoseconds{0};
  double wait_ns = std::ceil(-tokens_ / static_cast<double>(rate_) * 1e9);
  return std::chrono::nanoseconds{static_cast<std::int64_t>(wait_ns)};
}

boost::asio::awaitable<void> rate_limiter::acquire(std::uint64_t n) {
  auto wait = take(n);
  if (wait <= std::chrono::nanoseconds{0}) co_return;
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
  timer.expires_after(wait);
  // A cancelled wait (shutdown) just ends early: the caller's next I/O sees the
  // cancellation, and the data path stays free of exceptions.
  boost::system::error_code ec;
  co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
}

}  // namespace shoal
