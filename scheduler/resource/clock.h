#pragma once
// Time for the scheduler's state machines. Everything that expires or stalls
// reads this clock, so tests drive time by hand (manual_clock) instead of sleeping.

#include <chrono>
#include <cstdint>

namespace shoal::scheduler {

using time_point = std::chrono::steady_clock::time_point;
using duration = std::chrono::steady_clock::duration;

class clock {
 public:
  virtual ~clock() = default;
  // Monotonic now: used for every timeout.
  virtual time_point now() const = 0;
  // Wall-clock Unix milliseconds of a monotonic instant (for people and APIs).
  virtual std::int64_t unix_ms(time_point t) const = 0;
};

// The real clock: steady_clock for timeouts, system_clock for display.
class system_clock final : public clock {
 public:
  time_point now() const override;
  std::int64_t unix_ms(time_point t) const override;
};

// A clock that moves only when told to (tests, benchmarks).
class manual_clock final : public clock {
 public:
  // unix_epoch_ms is the wall time shown for the starting instant.
  explicit manual_clock(std::int64_t unix_epoch_ms = 1'700'000'000'000);
  time_point now() const override { return now_; }
  std::int64_t unix_ms(time_point t) const override;
  void advance(duration d) { now_ += d; }

 private:
  time_point start_;
  time_point now_;
  std::int64_t epoch_ms_;
};

}  // namespace shoal::scheduler
