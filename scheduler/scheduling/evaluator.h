#pragma once
// Parent choice for a child (DESIGN §10).
//
// Candidates: other hosts' live peers of the task whose host announced a
// piece-server address and that are not blocked for this child: any peer
// still receiving (even one that holds nothing yet; not for the source,
// whose peers hold only what it sent them), a finished peer holding pieces
// the child lacks, and the running source. With zones (both announced one):
// a peer in another zone only for the zone's gateway (lowest host id of the
// zone's live peers), and only while it holds pieces the gateway lacks.
// Score (higher is better):
//   capacity  * free upload (normalised to the best candidate) * slot factor
// + zone      if child and parent share a non-empty zone
// + useful    * fraction of the child's missing pieces the parent holds
// + seed      if the parent's host is a seed
// - failure   * failures blamed on the parent within the failure window
// - load      * children the parent already serves
// + stickiness if it is already one of the child's parents (avoids flapping)
// + jitter    * uniform[0,1) so near-equal candidates share the load.
// The best `parents_per_child` win.

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "scheduler/resource/clock.h"
#include "scheduler/resource/registry.h"
#include "scheduler/resource/task.h"

namespace shoal::scheduler {

struct weights {
  double capacity = 1.0;
  double zone = 0.5;
  double useful = 1.0;
  double seed = 0.3;
  double failure = 0.5;
  double load = 0.05;
  double stickiness = 0.2;
  double jitter = 0.1;
  // The running source's useful fraction counts as at least this much.
  double source_min_useful = 0.5;
};

struct evaluator_options {
  std::uint32_t parents_per_child = 8;
  // Children and parents that both announced a zone: only the zone's gateway
  // (its peer with the lowest host id) gets parents in other zones; the
  // others get peers of their own zone.
  bool zone_gateways = true;
  // At most this many candidates are scored per decision (current parents
  // plus a random sample), which bounds the cost on very large swarms.
  std::uint32_t candidate_limit = 40;
  duration failure_window = std::chrono::seconds(60);
  weights w;
};

struct scored_parent {
  host_id host;
  double score;  // without stickiness and jitter
};

class evaluator {
 public:
  explicit evaluator(evaluator_options opts) : opts_(opts) {}

  const evaluator_options& options() const noexcept { return opts_; }

  // Whether child is the peer of its zone that fetches from other zones
  // (true without a zone).
  bool zone_gateway(const registry& reg, const task& t, const peer& child) const;
  // Whether the zone rule lets `candidate` be a parent of `child`: the same
  // zone (or no zones), or child is its zone's gateway.
  bool zone_allows(const registry& reg, const task& t, const peer& child,
                   const peer& candidate) const;
  // Whether `candidate` may be a parent of `child` at all.
  bool is_candidate(const registry& reg, const task& t, const peer& child,
                    const peer& candidate) const;
  // Every candidate with its deterministic score, best first (ties by host id).
  std::vector<scored_parent> rank(const registry& reg, const task& t, const peer& child,
                                  time_point now) const;
  // The parents to send: the best parents_per_child after stickiness and jitter.
  std::vector<host_id> choose(const registry& reg, const task& t, const peer& child,
                              time_point now, std::mt19937_64& rng) const;

 private:
  struct scoring_context {
    const host* child_host;
    std::uint32_t child_missing;
    double max_free;
  };
  double score(const registry& reg, const task& t, const peer& child, const peer& candidate,
               const scoring_context& ctx, time_point now) const;
  std::vector<const peer*> candidates(const registry& reg, const task& t, const peer& child) const;
  // What is_candidate needs about the child, worked out once per decision.
  struct child_context {
    const std::string& zone;
    std::uint32_t zone_id;  // host::zone_id
    int gateway = -1;       // zone_gateway(child): -1 not known yet, else 0/1
  };
  static child_context context_of(const registry& reg, const peer& child);
  bool candidate_ok(const registry& reg, const task& t, const peer& child, child_context& cc,
                    const peer& candidate) const;
  static scoring_context context(const registry& reg, const peer& child,
                                 const std::vector<const peer*>& cands);

  evaluator_options opts_;
  // choose()'s scratch, kept between calls so a decision allocates only its
  // result: an identity permutation of roster slots and the swaps that undo
  // a partial shuffle of it, the child's current parents, the candidates and
  // their scores. The engine's owner thread only.
  struct scored_peer {
    const peer* p;
    double score;
  };
  mutable std::vector<std::uint32_t> perm_;
  mutable std::vector<std::uint32_t> swaps_;
  mutable std::vector<const peer*> current_;
  mutable std::vector<const peer*> cands_;
  mutable std::vector<scored_peer> scored_;
};

}  // namespace shoal::scheduler
