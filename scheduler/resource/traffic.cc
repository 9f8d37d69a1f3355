#include "scheduler/resource/traffic.h"

#include <chrono>

namespace shoal::scheduler {

std::int64_t traffic_stats::second_of(time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

void traffic_stats::record_piece(const task_id& t, const host_id& child, const host_id& parent,
                                 std::uint64_t bytes, time_point now) {
  const bool origin = parent.empty();
  (origin ? totals_.from_origin : totals_.from_peers) += bytes;

  const std::int64_t sec = second_of(now);
  slot& s = ring_[static_cast<std::size_t>(sec) % ring_.size()];
  if (s.second != sec) s = slot{sec, {}};
  (origin ? s.bytes.from_origin : s.bytes.from_peers) += bytes;

  add_host(child, sec, bytes, 0);
  if (!origin) add_host(parent, sec, 0, bytes);

  task_traffic& tt = tasks_[t];
  (origin ? tt.bytes.from_origin : tt.bytes.from_peers) += bytes;
  auto key = std::make_pair(parent, child);
  auto it = tt.edges.find(key);
  if (it == tt.edges.end()) {
    if (tt.edges.size() >= max_edges_per_task) return;  // bytes still counted above
    it = tt.edges.emplace(key, traffic_edge{parent, child, 0, 0, now, now}).first;
  }
  it->second.bytes += bytes;
  it->second.pieces += 1;
  it->second.last = now;
}

void traffic_stats::add_host(const host_id& h, std::int64_t sec, std::uint64_t down,
                             std::uint64_t up) {
  host_ring& r = hosts_[h];
  host_slot& s = r[static_cast<std::size_t>(sec) % r.size()];
  if (s.second != sec) s = host_slot{sec, 0, 0};
  s.down += down;
  s.up += up;
}

void traffic_stats::forget_task(const task_id& t) { tasks_.erase(t); }

const task_traffic* traffic_stats::find_task(const task_id& t) const {
  auto it = tasks_.find(t);
  return it == tasks_.end() ? nullptr : &it->second;
}

std::vector<traffic_stats::point> traffic_stats::series(time_point now,
                                                        std::size_t seconds) const {
  if (seconds > ring_seconds) seconds = ring_seconds;
  const std::int64_t cur = second_of(now);
  // The steady-clock instant where `now`'s second starts.
  const time_point cur_start = now - (now.time_since_epoch() - std::chrono::seconds(cur));
  std::vector<point> out;
  out.reserve(seconds);
  for (std::size_t k = seconds; k >= 1; --k) {
    const std::int64_t sec = cur - static_cast<std::int64_t>(k);
    const slot& s = ring_[static_cast<std::size_t>(sec) % ring_.size()];
    point p{cur_start - std::chrono::seconds(k), {}};
    if (s.second == sec) p.bytes = s.bytes;
    out.push_back(p);
  }
  return out;
}

traffic_stats::host_rates traffic_stats::rates(const host_id& h, time_point now) const {
  host_rates out;
  auto it = hosts_.find(h);
  if (it == hosts_.end()) return out;
  const std::int64_t cur = second_of(now);
  for (const host_slot& s : it->second) {
    if (s.second < cur - static_cast<std::int64_t>(rate_window_seconds) || s.second >= cur)
      continue;
    out.download += static_cast<double>(s.down);
    out.upload += static_cast<double>(s.up);
  }
  out.download /= rate_window_seconds;
  out.upload /= rate_window_seconds;
  return out;
}

byte_split traffic_stats::rate(time_point now) const {
  byte_split sum;
  for (const point& p : series(now, rate_window_seconds)) {
    sum.from_origin += p.bytes.from_origin;
    sum.from_peers += p.bytes.from_peers;
  }
  sum.from_origin /= rate_window_seconds;
  sum.from_peers /= rate_window_seconds;
  return sum;
}

void traffic_stats::prune_hosts(time_point now) {
  const std::int64_t cur = second_of(now);
  for (auto it = hosts_.begin(); it != hosts_.end();) {
    std::int64_t newest = -1;
    for (const host_slot& s : it->second) newest = std::max(newest, s.second);
    if (newest < cur - static_cast<std::int64_t>(rate_window_seconds))
      it = hosts_.erase(it);
    else
      ++it;
  }
}

}  // namespace shoal::scheduler
