#pragma once
// One host's copy of one task (one AnnouncePeer stream).
//
// State machine: running -> done (the host has every piece and verified the
// blob; it keeps serving as a parent) and running|done -> failed (the host gave
// up; it is no longer a parent or source candidate). A peer is removed when
// its stream ends.

#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "scheduler/resource/bitmap.h"
#include "scheduler/resource/clock.h"
#include "scheduler/resource/ids.h"

namespace shoal::scheduler {

struct host;

enum class peer_state { running, done, failed };
std::string_view to_string(peer_state s);

struct peer {
  peer(host_id h, task_id t, stream_id s, std::uint64_t sequence, std::uint32_t piece_count,
       time_point now);

  host_id host;
  // The host's record (registry::host_of falls back to a lookup when null): the
  // evaluator reads it for every candidate, where a lookup by string id cost a
  // map walk each. The registry keeps it valid (a host outlives its peers).
  const struct host* host_rec = nullptr;
  task_id task;
  stream_id stream;
  std::uint64_t seq;  // registration order within the scheduler (earlier = smaller)
  peer_state state = peer_state::running;

  // Pieces it holds whose bytes match the task's digest (see task.h). Change
  // it through task::add_finished / set_finished, which keep the task's
  // per-piece holder counts right.
  bitmap finished;
  bool has_client = false;  // it can read origin for a waiting client
  bool was_source = false;  // it was the source under a previous scheduler
  bool is_source = false;   // it is the task's current source peer
  bitmap origin_assigned;   // pieces the current FetchFromOrigin lists (source only)

  std::vector<host_id> parents;  // as last sent in Parents
  std::set<host_id> blocked;     // parents that served it bad bytes: never again for this task
  std::uint32_t children = 0;    // peers that list it as a parent

  // Bookkeeping of the task's indexes (task.h); only the task touches these.
  std::size_t roster_slot = 0;  // its index in task::roster()
  std::string zone_key;         // the zone it is indexed under (its host's, when added)

  // The engine's re-scoring bookkeeping (scheduling/engine.h); only it touches these.
  bool rescore_queued = false;  // waiting in the engine's queue for sweep()
  bool short_listed = false;    // in task::rescore_state::short_of_parents

  std::deque<time_point> failures;  // failures blamed on it as a parent, oldest first
  std::uint32_t bad_reports = 0;    // its own PieceFinished digests that did not match

  std::uint64_t bytes_from_origin = 0;
  std::uint64_t bytes_from_peers = 0;
  time_point registered_at;
  time_point last_piece_at;

  bool live() const noexcept { return state != peer_state::failed; }
  // Still downloading: a child that wants parents.
  bool needs_pieces() const noexcept { return state == peer_state::running && !finished.all(); }

  // running -> done; false (no change) from any other state.
  bool mark_done() noexcept;
  // running|done -> failed; false if already failed. The engine goes through
  // task::mark_failed, which also drops its pieces from the holder counts.
  bool mark_failed() noexcept;

  // Records a failure blamed on this peer as a parent and forgets those older than window.
  void record_failure(time_point now, duration window);
  // Failures within window of now.
  std::uint32_t recent_failures(time_point now, duration window) const;
};

}  // namespace shoal::scheduler
