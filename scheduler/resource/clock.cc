#include "scheduler/resource/clock.h"

namespace shoal::scheduler {

namespace chr = std::chrono;

time_point system_clock::now() const { return chr::steady_clock::now(); }

std::int64_t system_clock::unix_ms(time_point t) const {
  // Map through "now" on both clocks; good to the millisecond, which is all
  // that displays need.
  auto wall = chr::system_clock::now() - (chr::steady_clock::now() - t);
  return chr::duration_cast<chr::milliseconds>(wall.time_since_epoch()).count();
}

manual_clock::manual_clock(std::int64_t unix_epoch_ms)
    : start_(time_point{} + chr::hours(1)), now_(start_), epoch_ms_(unix_epoch_ms) {}

std::int64_t manual_clock::unix_ms(time_point t) const {
  return epoch_ms_ + chr::duration_cast<chr::milliseconds>(t - start_).count();
}

}  // namespace shoal::scheduler
