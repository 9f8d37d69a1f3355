#include "scheduler/scheduling/election.h"

#include <tuple>

namespace shoal::scheduler {

host_rank source_host_rank(const host& h, std::string_view origin_zone) {
  return {h.info.seed(), !origin_zone.empty() && h.info.zone() == origin_zone, h.source_rate()};
}

std::optional<host_id> elect_source(const registry& reg, const task& t, election_mode mode,
                                    const host_id* also_exclude, std::string_view origin_zone) {
  const peer* best = nullptr;
  // Larger is better for the flags; smaller seq (earlier) wins ties.
  auto rank = [&](const peer& p, const host& h) {
    return std::make_tuple(p.was_source, h.can_serve(), source_host_rank(h, origin_zone),
                           p.has_client);
  };
  std::tuple<bool, bool, host_rank, bool> best_rank{};
  for (const auto& [hid, p] : t.peers()) {
    if (p.state != peer_state::running) continue;
    if (t.source.excluded.contains(hid)) continue;
    if (also_exclude != nullptr && *also_exclude == hid) continue;
    const host* h = reg.host_of(p);
    if (h == nullptr) continue;
    if (mode == election_mode::initial && !(p.was_source || p.has_client || h->info.seed()))
      continue;
    auto r = rank(p, *h);
    if (best == nullptr || r > best_rank || (r == best_rank && p.seq < best->seq)) {
      best = &p;
      best_rank = r;
    }
  }
  if (best == nullptr) return std::nullopt;
  return best->host;
}

}  // namespace shoal::scheduler
