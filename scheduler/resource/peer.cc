#include "scheduler/resource/peer.h"

#include <algorithm>

namespace shoal::scheduler {

std::string_view to_string(peer_state s) {
  switch (s) {
    case peer_state::running: return "running";
    case peer_state::done: return "done";
    case peer_state::failed: return "failed";
  }
  return "unknown";
}

peer::peer(host_id h, task_id t, stream_id s, std::uint64_t sequence, std::uint32_t piece_count,
           time_point now)
    : host(std::move(h)),
      task(std::move(t)),
      stream(s),
      seq(sequence),
      finished(piece_count),
      origin_assigned(piece_count),
      registered_at(now),
      last_piece_at(now) {}

bool peer::mark_done() noexcept {
  if (state != peer_state::running) return false;
  state = peer_state::done;
  return true;
}

bool peer::mark_failed() noexcept {
  if (state == peer_state::failed) return false;
  state = peer_state::failed;
  return true;
}

void peer::record_failure(time_point now, duration window) {
  failures.push_back(now);
  while (!failures.empty() && now - failures.front() > window) failures.pop_front();
}

std::uint32_t peer::recent_failures(time_point now, duration window) const {
  return static_cast<std::uint32_t>(
      std::count_if(failures.begin(), failures.end(), [&](time_point t) { return now - t <= window; }));
}

}  // namespace shoal::scheduler
