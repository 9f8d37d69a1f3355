#pragma once
// Token bucket for bytes per second. Used on one executor (not thread-safe):
// callers co_await acquire(n) before moving n bytes. A rate of 0 means unlimited.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>

namespace shoal {

class rate_limiter {
 public:
  using clock_fn = std::function<std::chrono::steady_clock::time_point()>;
  // burst: bucket size in bytes (defaults to max(rate/10, 256 KiB)).
  explicit rate_limiter(std::uint64_t bytes_per_second, std::uint64_t burst = 0,
                        clock_fn clock = nullptr);

  std::uint64_t rate() const { return rate_; }
  // Takes n tokens now if available (may go into debt); returns how long the
  // caller must wait before moving the bytes. Pure: no sleeping.
  std::chrono::nanoseconds take(std::uint64_t n);
  // take(n) then sleep for the returned wait on the current executor.
  boost::asio::awaitable<void> acquire(std::uint64_t n);

 private:
  std::uint64_t rate_;
  double burst_;
  double tokens_;
  clock_fn clock_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace shoal
