#pragma once
// A machine running shoald, as last announced.

#include <cstdint>
#include <set>

#include "scheduler/resource/clock.h"
#include "scheduler/resource/ids.h"
#include "shoal/v1/scheduler.pb.h"

namespace shoal::scheduler {

// What "unlimited" upload counts as when comparing free capacity (10 GB/s).
inline constexpr std::uint64_t kUnlimitedRate = 10'000'000'000ull;

struct host {
  host_id id;
  v1::Host info;            // as last announced; info.id() == id.str()
  time_point first_seen{};
  time_point last_seen{};
  bool announced = false;   // false: known only from a Register, no address yet
  std::set<task_id> tasks;  // tasks this host has a peer in
  // info.zone() interned by the registry (0 = no zone): the evaluator
  // compares zones for every candidate, and ints compare without a memcmp.
  std::uint32_t zone_id = 0;

  bool expired(time_point now, duration ttl) const { return now - last_seen > ttl; }
  // Other peers can fetch from it only once it has told us its piece server address.
  bool can_serve() const { return !info.peer_addr().empty(); }
  // How fast this host can take a blob from origin and pass it on, for the
  // source election: the slowest of its announced link rate and rate
  // limits; UINT64_MAX when it announced none (not known to be slow).
  std::uint64_t source_rate() const;
  // Upload bandwidth left in bytes/s (limit minus current rate; 0 limit = kUnlimitedRate).
  std::uint64_t free_upload() const;
  // Fraction of upload slots free, 1 when the host does not report slots.
  double free_slot_fraction() const;
};

}  // namespace shoal::scheduler
