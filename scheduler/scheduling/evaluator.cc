#include "scheduler/scheduling/evaluator.h"

#include <algorithm>

namespace shoal::scheduler {

namespace {
const std::string& zone_of(const registry& reg, const peer& p) {
  static const std::string none;
  const host* hh = reg.host_of(p);
  return hh == nullptr ? none : hh->info.zone();
}
}  // namespace

bool evaluator::zone_gateway(const registry& reg, const task& t, const peer& child) const {
  const std::string& zone = zone_of(reg, child);
  if (zone.empty()) return true;
  return t.lowest_live_in_zone(zone, child.host);
}

bool evaluator::zone_allows(const registry& reg, const task& t, const peer& child,
                            const peer& candidate) const {
  if (!opts_.zone_gateways) return true;
  const host* ch = reg.host_of(child);
  const host* h = reg.host_of(candidate);
  if (ch == nullptr || h == nullptr || ch->zone_id == 0 || h->zone_id == 0 ||
      ch->zone_id == h->zone_id)
    return true;
  return zone_gateway(reg, t, child);
}

bool evaluator::is_candidate(const registry& reg, const task& t, const peer& child,
                             const peer& candidate) const {
  child_context cc = context_of(reg, child);
  return candidate_ok(reg, t, child, cc, candidate);
}

bool evaluator::candidate_ok(const registry& reg, const task& t, const peer& child,
                             child_context& cc, const peer& candidate) const {
  // One peer per host in a task: the same record is the same host.
  if (&candidate == &child || !candidate.live()) return false;
  if (!child.blocked.empty() && child.blocked.contains(candidate.host)) return false;
  const host* h = reg.host_of(candidate);
  if (h == nullptr || !h->can_serve()) return false;
  const bool cross_zone =
      opts_.zone_gateways && cc.zone_id != 0 && h->zone_id != 0 && h->zone_id != cc.zone_id;
  if (cross_zone) {
    // One peer per zone (the lowest host id) fetches across zones, from
    // peers holding pieces it lacks: the link between zones carries about
    // one copy into each zone.
    if (cc.gateway < 0) cc.gateway = t.lowest_live_in_zone(cc.zone, child.host) ? 1 : 0;
    if (cc.gateway == 0) return false;
  } else if (candidate.state == peer_state::running &&
             !(t.state() == task_state::running && t.source.current == child.host)) {
    // A peer still receiving qualifies before it holds anything the child
    // lacks: the child long-polls its bitmap and asks for each piece the
    // moment it lands. Waiting until it held something cost every child of a
    // new swarm its relays for up to a tick (bench/swarm: no child fetched
    // from another in the first 0.8 s). Not for the source: those peers hold
    // only what it sent them.
    return true;
  }
  if (candidate.finished.count_and_not(child.finished) > 0) return true;
  // The running source is worth connecting to before it holds much: it is
  // receiving from origin and children long-poll its bitmap.
  return candidate.state == peer_state::running && t.state() == task_state::running &&
         t.source.current == candidate.host;
}

evaluator::child_context evaluator::context_of(const registry& reg, const peer& child) {
  const host* h = reg.host_of(child);
  return {zone_of(reg, child), h == nullptr ? 0u : h->zone_id};
}

std::vector<const peer*> evaluator::candidates(const registry& reg, const task& t,
                                               const peer& child) const {
  std::vector<const peer*> out;
  child_context cc = context_of(reg, child);
  for (const auto& [hid, p] : t.peers())
    if (candidate_ok(reg, t, child, cc, p)) out.push_back(&p);
  return out;
}

evaluator::scoring_context evaluator::context(const registry& reg, const peer& child,
                                              const std::vector<const peer*>& cands) {
  scoring_context ctx{reg.host_of(child), child.finished.size() - child.finished.count(), 0.0};
  for (const peer* p : cands)
    if (const host* h = reg.host_of(*p))
      ctx.max_free = std::max(ctx.max_free, static_cast<double>(h->free_upload()));
  return ctx;
}

double evaluator::score(const registry& reg, const task& t, const peer& child,
                        const peer& candidate, const scoring_context& ctx, time_point now) const {
  const weights& w = opts_.w;
  const host* h = reg.host_of(candidate);
  double s = 0;
  if (h != nullptr) {
    if (ctx.max_free > 0) {
      const double free = static_cast<double>(h->free_upload()) / ctx.max_free;
      s += w.capacity * free * (0.5 + 0.5 * h->free_slot_fraction());
    }
    if (ctx.child_host != nullptr && !h->info.zone().empty() &&
        h->info.zone() == ctx.child_host->info.zone())
      s += w.zone;
    if (h->info.seed()) s += w.seed;
  }
  double useful = ctx.child_missing == 0
                      ? 0.0
                      : static_cast<double>(candidate.finished.count_and_not(child.finished)) /
                            ctx.child_missing;
  if (t.state() == task_state::running && t.source.current == candidate.host)
    useful = std::max(useful, w.source_min_useful);
  s += w.useful * useful;
  s -= w.failure * candidate.recent_failures(now, opts_.failure_window);
  s -= w.load * candidate.children;
  return s;
}

std::vector<scored_parent> evaluator::rank(const registry& reg, const task& t, const peer& child,
                                           time_point now) const {
  auto cands = candidates(reg, t, child);
  auto ctx = context(reg, child, cands);
  std::vector<scored_parent> out;
  out.reserve(cands.size());
  for (const peer* p : cands) out.push_back({p->host, score(reg, t, child, *p, ctx, now)});
  std::sort(out.begin(), out.end(), [](const scored_parent& a, const scored_parent& b) {
    return a.score != b.score ? a.score > b.score : a.host < b.host;
  });
  return out;
}

std::vector<host_id> evaluator::choose(const registry& reg, const task& t, const peer& child,
                                       time_point now, std::mt19937_64& rng) const {
  // Current parents first (they keep their place unless something clearly
  // better shows up), then a random partial scan of the other peers that stops
  // after candidate_limit candidates: the cost per decision stays bounded on
  // swarms of thousands of peers, and the sample spreads load by itself.
  child_context cc = context_of(reg, child);
  // Scratch kept between calls (the owner thread's only): allocating these
  // per decision was 15% of the owner's perf samples while bench/scheduler's
  // 25,000 peers left (each departure re-scores the parent's children).
  std::vector<const peer*>& current = current_;
  std::vector<const peer*>& cands = cands_;
  current.clear();
  cands.clear();
  for (const auto& h : child.parents) {
    if (const peer* p = t.find_peer(h)) {
      current.push_back(p);
      if (candidate_ok(reg, t, child, cc, *p)) cands.push_back(p);
    }
  }
  // The partial scan is a Fisher-Yates shuffle of the task's roster through
  // an identity permutation kept between calls (perm_), undone afterwards:
  // a decision costs O(draws), not O(peers).
  const std::vector<peer*>& roster = t.roster();
  const std::size_t n = roster.size();
  if (perm_.size() < n) {
    const std::size_t old = perm_.size();
    perm_.resize(n);
    for (std::size_t k = old; k < n; ++k) perm_[k] = static_cast<std::uint32_t>(k);
  }
  const std::size_t limit = std::max<std::size_t>(opts_.candidate_limit, cands.size());
  std::size_t i = 0;
  for (; i < n && cands.size() < limit; ++i) {
    std::uniform_int_distribution<std::size_t> pick(i, n - 1);
    const std::size_t j = pick(rng);
    std::swap(perm_[i], perm_[j]);
    swaps_.push_back(static_cast<std::uint32_t>(j));
    const peer* p = roster[perm_[i]];
    if (p == &child || std::find(current.begin(), current.end(), p) != current.end()) continue;
    if (candidate_ok(reg, t, child, cc, *p)) cands.push_back(p);
  }
  while (i > 0) {
    --i;
    std::swap(perm_[i], perm_[swaps_.back()]);
    swaps_.pop_back();
  }

  auto ctx = context(reg, child, cands);
  std::uniform_real_distribution<double> jitter(0.0, 1.0);
  // Scored by peer, not by a copy of its host id: only the winners' ids are copied.
  std::vector<scored_peer>& scored = scored_;
  scored.clear();
  for (const peer* p : cands) {
    double s = score(reg, t, child, *p, ctx, now);
    if (std::find(current.begin(), current.end(), p) != current.end()) s += opts_.w.stickiness;
    s += opts_.w.jitter * jitter(rng);
    scored.push_back({p, s});
  }
  const std::size_t k = std::min<std::size_t>(opts_.parents_per_child, scored.size());
  std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(k), scored.end(),
                    [](const scored_peer& a, const scored_peer& b) {
                      return a.score != b.score ? a.score > b.score : a.p->host < b.p->host;
                    });
  std::vector<host_id> out;
  out.reserve(k);
  for (std::size_t i = 0; i < k; ++i) out.push_back(scored[i].p->host);
  return out;
}

}  // namespace shoal::scheduler
