#pragma once
// Where the swarm's bytes came from, as the scheduler learns it from
// PieceFinished reports: per task the bytes read from origin (the registry)
// and from parents, who fed whom (parent -> child edges with byte counts),
// per-host recent upload/download rates, totals since start, and a short
// ring of per-second totals for the dashboard's throughput chart.
//
// Pure data like the rest of resource/: no I/O, no clock of its own (calls
// take `now`), owned by the scheduler's owner thread. Memory is bounded: the
// ring has a fixed length, edges per task are capped, per-task records go
// with their task and idle host records are pruned.

#include <array>
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "scheduler/resource/clock.h"
#include "scheduler/resource/ids.h"

namespace shoal::scheduler {

// Bytes in one second (or summed over a window).
struct byte_split {
  std::uint64_t from_origin = 0;
  std::uint64_t from_peers = 0;
  std::uint64_t total() const noexcept { return from_origin + from_peers; }
};

// parent -> child for one task; parent empty = origin (the registry).
struct traffic_edge {
  host_id parent;
  host_id child;
  std::uint64_t bytes = 0;
  std::uint32_t pieces = 0;
  time_point first{};
  time_point last{};
};

struct edge_hash {
  std::size_t operator()(const std::pair<host_id, host_id>& k) const noexcept {
    const std::size_t a = std::hash<host_id>{}(k.first);
    return a ^ (std::hash<host_id>{}(k.second) + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
  }
};

struct task_traffic {
  byte_split bytes;
  // (parent, child), unordered: every PieceFinished finds its edge here, and
  // a tree of up to 4,096 string pairs cost a fifth of the owner thread.
  // Readers that show edges sort them (dashboard views).
  std::unordered_map<std::pair<host_id, host_id>, traffic_edge, edge_hash> edges;
};

class traffic_stats {
 public:
  static constexpr std::size_t ring_seconds = 300;     // chart history
  static constexpr std::size_t rate_window_seconds = 5;  // per-host rates
  static constexpr std::size_t max_edges_per_task = 4096;

  // One verified piece of `bytes` that `child` now holds; parent empty = read from origin.
  void record_piece(const task_id& t, const host_id& child, const host_id& parent,
                    std::uint64_t bytes, time_point now);
  // The task is gone (its last peer left or it was dropped): forget its edges.
  void forget_task(const task_id& t);

  // Since the scheduler started (survives forgotten tasks).
  const byte_split& totals() const noexcept { return totals_; }
  const task_traffic* find_task(const task_id& t) const;

  // Per-second totals, oldest first, for the whole seconds before `now`'s
  // second (the current second is still filling): up to `seconds` points,
  // each with the steady-clock start of its second.
  struct point {
    time_point at;
    byte_split bytes;
  };
  std::vector<point> series(time_point now, std::size_t seconds) const;

  // Bytes per second over the last rate_window_seconds whole seconds.
  struct host_rates {
    double download = 0;  // bytes it received (from origin or parents)
    double upload = 0;    // bytes children report fetching from it
  };
  host_rates rates(const host_id& h, time_point now) const;
  // Bytes per second over the last rate_window_seconds whole seconds, all hosts.
  byte_split rate(time_point now) const;
  // Drops per-host records idle for longer than the rate window.
  void prune_hosts(time_point now);

 private:
  // Seconds since an arbitrary steady epoch.
  static std::int64_t second_of(time_point t);
  struct slot {
    std::int64_t second = -1;
    byte_split bytes;
  };
  struct host_slot {
    std::int64_t second = -1;
    std::uint64_t down = 0;
    std::uint64_t up = 0;
  };
  using host_ring = std::array<host_slot, rate_window_seconds + 1>;
  void add_host(const host_id& h, std::int64_t sec, std::uint64_t down, std::uint64_t up);

  byte_split totals_;
  std::array<slot, ring_seconds + 1> ring_{};
  std::unordered_map<host_id, host_ring> hosts_;
  std::unordered_map<task_id, task_traffic> tasks_;
};

}  // namespace shoal::scheduler
