#pragma once
// The swarm side of a download (DESIGN §3–§6, scheduler/README.md): for each
// task a swarm_session registers with the scheduler and obeys its decisions:
// read listed pieces from origin (the source peer), or fetch pieces from
// parents' piece servers, verifying each against the scheduler's digest.
//
// Threading: everything runs on the daemon's I/O executor, like the task
// manager; gRPC reactions are posted to it by scheduler_client.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/metrics.h"
#include "daemon/source/registry_client.h"
#include "daemon/transfer/scheduler_client.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::transfer {

// Piece requests a child keeps open to one parent. With two or more usable
// parents, one each: a piece crosses a parent's uplink sooner when fewer
// share it, and it can be passed on only once whole (16 nodes x 512 MiB at
// 25 MiB/s: 27.1 s against 28.0 s with two each, bench/README.md). A child's
// only parent gets `only_parent` (a second request keeps the link busy
// between one piece and the next).
constexpr std::size_t requests_per_parent(std::size_t usable_parents, std::size_t only_parent) {
  return usable_parents > 1 ? 1 : only_parent;
}

// Whether a child asks a parent only for pieces no other parent can give.
// Yes for the source while it reads origin: every new byte enters the swarm
// through its uplink. Once it holds every piece it is a parent like any other,
// and so is a seed: its uplink has nothing new left to carry, and keeping it
// for last left it idle while the children caught up (8 nodes x 512 MiB at
// 25 MiB/s: 23.45 s against 24.26 s, bench/README.md).
constexpr bool parent_last_resort(bool reading_source, bool holds_every_piece) {
  return reading_source && !holds_every_piece;
}

// Of a child's max_in_flight piece requests, how many are in use: pieces
// being received, those waiting to be hashed and written (in memory too),
// and each piece from a source still reading origin once more. Such a piece
// is a first copy: it crosses the source's uplink once, and the swarm waits
// for it. On the child's downlink it shares with the other fetches, so with
// one fetch fewer beside it gets a third of the link instead of a quarter
// (8 nodes x 512 MiB at 25 MiB/s: 23.28 s against 23.64 s; counted three
// times, 23.68 s; bench/README.md).
constexpr std::size_t fetch_slots_used(std::size_t receiving, std::size_t verifying,
                                       std::size_t from_reading_source) {
  return receiving + verifying + from_reading_source;
}

// Whether a child may ask another child for a piece that child is still
// receiving, with `in_flight` such requests open already. A relay goes no
// faster than its parent receives the piece, so each one holds a request slot
// at part of the link's rate; with no cap, 16 nodes at 12.5 MiB/s ended with
// stragglers (53.36 s against 51.83 s with 2, 51.96 s with 1, 51.60 s with
// none), while 8 nodes at 25 MiB/s gained from a few (23.30 s with 2, 23.60 s
// with none; bench/README.md). Pieces the reading source relays from origin
// (first copies) are not capped: every byte has to leave it once.
constexpr bool sibling_relay_allowed(std::size_t in_flight, std::size_t cap) {
  return in_flight < cap;
}

// How busy a parent's uplink looks to a child choosing whom to ask for a
// piece: the piece uploads the parent reported with its latest bitmap
// (X-Shoal-Uploads, all tasks) plus the requests this child sent it since.
// A report older than kUploadsFresh counts as unknown (0): parents report
// with each bitmap change, a few times a second while pieces flow, but a
// seed's bitmap no longer changes.
inline constexpr std::chrono::milliseconds kUploadsFresh{500};
constexpr std::size_t parent_upload_load(std::size_t reported, std::size_t asked_since,
                                         std::chrono::steady_clock::duration age) {
  return age < kUploadsFresh ? reported + asked_since : 0;
}

// The order in which a child asks the parents holding a piece, lowest first:
// not a last resort (parent_last_resort), holding it whole rather than still
// receiving it (a relay goes no faster than the parent receives), fewer of
// this child's requests open to it, the less busy uplink
// (parent_upload_load), then a random draw. Before
// the load, the first idle parent in host-id order won, so the lowest ids'
// uplinks were busiest and the highest ids' idled (8 nodes x 512 MiB at
// 25 MiB/s: children uploaded 90-92% of their rate down to 46%). With it,
// 16 nodes took 25.55 s against 26.91 s; 8 nodes, whose uplinks have more
// slack, 23.63 against 23.67 s (bench/README.md).
using holder_rank = std::tuple<bool, bool, std::size_t, std::size_t, std::uint32_t>;

struct swarm_options {
  std::string host_id;
  bool back_to_source = true;         // false: never read origin unless elected by the scheduler
  std::size_t max_in_flight = 4;      // piece requests per task, spread across parents
  std::size_t per_parent = 2;         // piece requests to a child's only parent
  // Requests at once for pieces other children are still receiving
  // (sibling_relay_allowed).
  std::size_t max_sibling_relays = 2;
  std::size_t origin_streams = 2;     // parallel Range GETs for the source
  // Pieces per origin Range GET at most: short runs keep what a dying source
  // leaves in socket buffers (read by the registry, never used) small.
  std::uint32_t origin_run_pieces = 1;
  // While other daemons are asking it for pieces, a source reads origin at
  // most this many pieces ahead of what it has delivered to them: the pieces
  // only it holds are what a dying source costs the registry again. 0: no cap.
  std::uint32_t source_lead = 4;
  // A peer that was not the source re-registers this much later after losing
  // the scheduler, so the old source registers first and is re-elected
  // (otherwise the first child to come back would read origin again).
  std::chrono::milliseconds reregister_delay{750};
  std::chrono::seconds piece_timeout{60};
  std::chrono::seconds bitmap_poll{25};  // client side timeout of a /bitmap long-poll
};

struct swarm_metrics {
  explicit swarm_metrics(metrics::registry& r);
  metrics::family<metrics::counter>& peer_bytes;       // shoal_peer_bytes_total{parent}
  metrics::family<metrics::counter>& piece_failures;   // shoal_piece_failures_total{reason}
  metrics::histogram& fetch_seconds;                   // shoal_piece_fetch_seconds{source="peer"}
  metrics::counter& bytes;                             // shoal_bytes_total{source="peer"}
  metrics::family<metrics::counter>& failures;         // shoal_failures_total{kind}
  metrics::family<metrics::counter>& blob_verifications;  // shoal_blob_verifications_total{how}
  metrics::counter& blob_hash_bytes;                      // shoal_blob_hash_bytes_total
};

class swarm {
 public:
  swarm(task_manager& tm, scheduler_client& sched, metrics::registry& reg, swarm_options opts);
  ~swarm();
  // Starts the swarm download of a new task (called by task_manager).
  void start(std::shared_ptr<task> t, source::request_target origin);
  // Ends every stream (shutdown).
  void stop();
  std::size_t sessions() const { return sessions_.size(); }
  // Distinct parent hosts that downloads in progress may fetch from now.
  std::size_t active_parents() const;

 private:
  friend class swarm_session;
  task_manager& tm_;
  scheduler_client& sched_;
  swarm_metrics metrics_;
  swarm_options opts_;
  std::map<std::string, std::shared_ptr<swarm_session>> sessions_;
  bool stopped_ = false;
};

}  // namespace shoal::transfer
