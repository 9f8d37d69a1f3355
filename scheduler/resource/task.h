#pragma once
// One immutable content object and everything the scheduler knows about it.
//
// State machine: running -> sealed (the whole blob was verified; the digest
// list is final) and running -> poisoned (the blob failed verification, or two
// origin reads of one piece disagreed; the task is then dropped). Sealed and
// poisoned are final.
//
// Piece digests: the first origin report of a piece wins; a later report that
// differs is a conflict (the caller poisons the task). A peer's `finished`
// bitmap only ever holds pieces whose digest is known and matched, so "held by
// a live peer" always means "fetchable and verifiable".

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "scheduler/resource/bitmap.h"
#include "scheduler/resource/clock.h"
#include "scheduler/resource/ids.h"
#include "scheduler/resource/peer.h"
#include "shoal/v1/scheduler.pb.h"

namespace shoal::scheduler {

enum class task_state { running, sealed, poisoned };
std::string_view to_string(task_state s);

enum class digest_update { added, same, conflict };

// A digest recorded but not yet broadcast; the reporter does not need it back.
struct pending_digest {
  std::uint32_t index;
  stream_id reporter;
};

class task {
 public:
  task(task_id id, std::uint64_t content_length, std::uint32_t piece_length, v1::Origin origin,
       time_point created);

  const task_id& id() const noexcept { return id_; }
  std::uint64_t content_length() const noexcept { return content_length_; }
  std::uint32_t piece_length() const noexcept { return piece_length_; }
  std::uint32_t piece_count() const noexcept { return piece_count_; }
  const v1::Origin& origin() const noexcept { return origin_; }
  time_point created() const noexcept { return created_; }
  // Bytes in piece i (the last piece may be short).
  std::uint64_t piece_bytes(std::uint32_t i) const noexcept;

  task_state state() const noexcept { return state_; }
  // running -> sealed; false from any other state.
  bool seal() noexcept;
  // running -> poisoned; false from any other state.
  bool poison() noexcept;

  // Records the digest of piece i (index validated by the caller).
  digest_update record_digest(std::uint32_t i, std::string_view sha256);
  bool digest_known(std::uint32_t i) const noexcept { return known_.test(i); }
  // Empty when unknown.
  const std::string& digest(std::uint32_t i) const noexcept { return digests_[i]; }
  const bitmap& known() const noexcept { return known_; }
  bool all_digests_known() const noexcept { return known_.all(); }

  peer* find_peer(const host_id& h);
  const peer* find_peer(const host_id& h) const;
  // Peers by host. Add and remove them through add_peer / erase_peer (the
  // registry does), which keep the indexes below right.
  std::map<host_id, peer>& peers() noexcept { return peers_; }
  const std::map<host_id, peer>& peers() const noexcept { return peers_; }

  // Adds the peer of host h (none yet); `rec` is h's record, if any.
  peer& add_peer(const host_id& h, const struct host* rec, stream_id s, std::uint64_t seq,
                 time_point now);
  // Removes the peer of h from every index and the task; its parents lose a child.
  void erase_peer(const host_id& h);

  // Every peer of the task in no particular order (swap-remove on erase): the
  // parent choice samples its candidate pool from it in O(draws) rather than
  // walking the peers map on every decision.
  const std::vector<peer*>& roster() const noexcept { return roster_; }

  // --- pieces held, per piece, by live peers (kept on every change, so
  // "what is missing everywhere" costs O(pieces), not a merge of every bitmap)
  // Marks piece i finished at p; false if p already held it.
  bool add_finished(peer& p, std::uint32_t i);
  // Replaces p's finished pieces (a Register's bitmap).
  void set_finished(peer& p, bitmap pieces);
  // running|done -> failed (peer::mark_failed); its pieces stop counting as held.
  bool mark_failed(peer& p);
  // Live peers holding piece i.
  std::uint32_t holders(std::uint32_t i) const noexcept { return holders_[i]; }
  // Pieces that at least one live (not failed) peer holds.
  bitmap held_by_live_peers() const;
  // Pieces no live peer holds: what origin still has to provide.
  bitmap missing_everywhere() const;
  // Whether some piece is held by no live peer, in O(1).
  bool anything_missing() const noexcept { return held_pieces_ < piece_count_; }

  // Replaces child's parent list, keeping every parent's children count and
  // the children index right.
  void set_parents(peer& child, std::vector<host_id> parents);
  // Hosts whose peers list `parent` among their parents, ascending. The
  // index is by host id, not by peer: a child keeps a departed parent's id
  // until it is re-scheduled, and is found here by it.
  std::vector<host_id> children_of(const host_id& parent) const;

  // --- zones (the evaluator's gateway rule)
  // Whether no live peer of `zone` has a host id below h.
  bool lowest_live_in_zone(const std::string& zone, const host_id& h) const;
  // The live peer of `zone` with the lowest host id (the zone's gateway), if any.
  const peer* zone_gateway(const std::string& zone) const;
  // Re-indexes p under its host's current zone (after a heartbeat changed it).
  void rezone(peer& p);

  // Source peer bookkeeping, owned by the scheduling engine.
  struct source_state {
    std::optional<host_id> current;  // the elected source, if any
    bool ever_elected = false;       // a source was elected since the task was created
    std::set<host_id> excluded;      // hosts that stalled or failed as source for this task
    std::uint32_t failures = 0;      // sources that reported Failed
    time_point last_progress{};      // election or the source's last PieceFinished
    // The first election waits until then for a peer in the origin zone.
    std::optional<time_point> election_due;
  };
  source_state source;

  // Digests waiting to be broadcast (batched), owned by the scheduling engine.
  std::vector<pending_digest> pending_digests;
  std::optional<time_point> pending_since;

  // What the engine's incremental re-scoring needs to know (scheduling/engine.h), owned by it.
  struct rescore_state {
    // Children that got fewer parents than they want at their last re-score:
    // re-scored when the task gains pieces or peers (new_supply).
    std::vector<host_id> short_of_parents;
    // A peer gained a piece, joined, became reachable or was elected source
    // since the last maintain().
    bool new_supply = false;
    // The source at the last maintain(): a change is new supply too.
    std::optional<host_id> source_seen;
    // Events and membership changes so far, and their number when the full
    // pass last started on the task: a task with none in between is idle and
    // the full pass skips it.
    std::uint64_t changes = 0;
    std::uint64_t changes_at_full_pass = ~std::uint64_t{0};
  };
  rescore_state rescore;

 private:
  task_id id_;
  std::uint64_t content_length_;
  std::uint32_t piece_length_;
  std::uint32_t piece_count_;
  v1::Origin origin_;
  time_point created_;
  task_state state_ = task_state::running;
  std::vector<std::string> digests_;
  bitmap known_;
  std::map<host_id, peer> peers_;
  std::vector<peer*> roster_;
  std::vector<std::uint32_t> holders_;             // per piece, live holders
  std::uint32_t held_pieces_ = 0;                  // pieces with holders_ > 0
  std::map<host_id, std::set<host_id>> children_;  // parent host -> child hosts
  // Peers whose host announced a zone, by zone then host id (live or not).
  std::map<std::string, std::map<host_id, const peer*>> zones_;

  void count_pieces(const peer& p, int delta);
  void index_zone(peer& p);
  void unindex_zone(const peer& p);
};

}  // namespace shoal::scheduler
