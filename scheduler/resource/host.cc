#include "scheduler/resource/host.h"

#include <algorithm>
#include <cstdint>

namespace shoal::scheduler {

std::uint64_t host::free_upload() const {
  const std::uint64_t limit = info.upload_rate_limit() == 0 ? kUnlimitedRate
                                                            : info.upload_rate_limit();
  return limit > info.upload_rate() ? limit - info.upload_rate() : 0;
}

double host::free_slot_fraction() const {
  if (info.upload_slots() == 0) return 1.0;
  const double used = std::min<double>(info.upload_slots_in_use(), info.upload_slots());
  return 1.0 - used / info.upload_slots();
}

std::uint64_t host::source_rate() const {
  std::uint64_t r = UINT64_MAX;
  for (std::uint64_t v : {info.link_rate(), info.upload_rate_limit(), info.download_rate_limit()})
    if (v != 0) r = std::min(r, v);
  return r;
}

}  // namespace shoal::scheduler
