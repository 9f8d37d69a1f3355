#pragma once
// The scheduler's decision engine: turns peer events, heartbeats and time into
// decisions (FetchFromOrigin, StopFromOrigin, Parents, PieceDigests, Abort).
//
// Threading: not thread-safe. One owner (the service's io_context thread)
// calls everything; the decision_sink is called synchronously from inside
// these calls and must not call back into the engine.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "scheduler/resource/clock.h"
#include "scheduler/resource/registry.h"
#include "scheduler/scheduling/evaluator.h"
#include "scheduler/scheduling/metrics.h"
#include "shoal/v1/scheduler.pb.h"

namespace shoal::scheduler {

struct engine_options {
  duration host_ttl = std::chrono::seconds(30);
  // A source that reports no piece for this long while pieces are still
  // missing everywhere is replaced.
  duration source_stall_timeout = std::chrono::seconds(20);
  std::uint32_t announce_interval_seconds = 5;
  // Origin digests are broadcast in batches: at most this late, or at once
  // when this many are waiting.
  duration digest_batch_delay = std::chrono::milliseconds(20);
  std::size_t digest_batch_size = 64;
  // A batch is one message to every peer of the task: past this many peers
  // the delay grows in proportion (a task then costs about this many
  // messages per digest_batch_delay), up to digest_batch_delay_max. With
  // 500 peers a source reporting a piece every 20 ms cost 25,000
  // messages a second. 16 was measured (bench/README.md, scheduler): 26-31%
  // fewer PieceDigests and a lower p99 at a quarter of bench/scheduler's
  // events, a higher p99 at the full load in 2 pairs out of 2; kept at 64.
  std::size_t digest_batch_peers = 64;
  duration digest_batch_delay_max = std::chrono::milliseconds(200);
  // After this many source peers of one task report Failed, the task is
  // aborted with NO_SOURCE (origin refuses everyone).
  std::uint32_t max_source_failures = 3;
  // Largest task accepted, in pieces (bounds bitmap memory per peer).
  std::uint32_t max_piece_count = 1u << 20;
  // The zone where origin's bytes enter the cluster (its registries are
  // nearest to it), "" if unknown; origin_zones maps one registry
  // (HOST[:PORT] as in Origin.registry) to its zone. A task's first source is
  // elected in that zone: a source elsewhere pulls every byte across the
  // link between zones and the origin zone's peers pull it back. When a
  // known host would be a better first source (a seed, in the origin zone,
  // or faster: host::source_rate) than the best peer so far, the election
  // waits up to election_window for one of its peers.
  std::string origin_zone;
  std::map<std::string, std::string> origin_zones;
  duration election_window = std::chrono::milliseconds(300);
  // Children are re-scored when something changed for them (see maintain());
  // under that, a full pass re-scores every child of a task that is not idle
  // at least once per full_pass_period, and at least full_pass_min_rate
  // children a second (so a small swarm is still re-scored about every tick).
  duration full_pass_period = std::chrono::seconds(30);
  double full_pass_min_rate = 256;
  evaluator_options evaluation;
};

// Where decisions go: the service writes them to the AnnouncePeer streams.
class decision_sink {
 public:
  virtual ~decision_sink() = default;
  // Queues d on stream s; a stream that is gone or closing drops it.
  virtual void send(stream_id s, v1::Decision d) = 0;
  // Ends stream s once its queued decisions are written (after an Abort).
  virtual void close(stream_id s) = 0;
};

class engine {
 public:
  engine(engine_options opts, const clock& clk, decision_sink& sink, scheduler_metrics& m,
         std::uint64_t seed);

  // One event read from AnnouncePeer stream s; the first must be a Register.
  void on_event(stream_id s, const v1::PeerEvent& ev);
  // Stream s ended (client closed, cancelled, broke, or the server closed it).
  void on_stream_end(stream_id s);

  // Heartbeat: upserts the host. Fails on a missing host id.
  result<v1::AnnounceHostResponse> announce_host(const v1::Host& h);
  // A host leaving on purpose: its peers are removed at once.
  void leave_host(const host_id& h);
  result<v1::TaskInfo> stat_task(const task_id& t) const;
  v1::ListHostsResponse list_hosts() const;
  v1::ListTasksResponse list_tasks() const;

  // Periodic work (call every 1-2 s): host expiry, source stalls and pending
  // elections, re-scoring the children whose situation changed.
  // Equivalent to maintain() followed by sweep() until it returns false.
  void tick();
  // tick() in slices, so events are decided between them. maintain() does the
  // cheap part and queues children to re-score: those whose parent turned
  // useless to them (queued by the event that did it), those with fewer than
  // parents_per_child parents when their task gained pieces, peers or a
  // source since the last maintain(), and the full pass's share (see
  // engine_options::full_pass_period). A departing or failing parent's
  // children and a child reporting a broken parent are re-scored at once.
  // sweep(budget) re-scores up to `budget` queued children and returns
  // whether some are left; a queue still going at the next maintain() carries
  // on, and a child is queued once however many reasons it has.
  void maintain();
  bool sweep(std::size_t budget);
  // Children waiting in the re-scoring queue (stale entries included).
  std::size_t rescores_queued() const noexcept { return queue_.size() - queue_next_; }
  // Broadcasts every batched digest now.
  void flush_digests();
  // Broadcasts the batches that are due (each task after its own
  // digest_delay), leaving the others to wait; the service's timer calls it.
  void flush_due_digests();
  // When the oldest batched digest is due, if any is waiting.
  std::optional<time_point> next_digest_flush() const;
  // How long t's digests wait to be broadcast (engine_options::digest_batch_*).
  duration digest_delay(const task& t) const;
  // Elections held back for a peer in the origin zone: when the first one is
  // due, and holding those that are due (any source then).
  std::optional<time_point> next_election() const;
  void run_due_elections();

  const registry& state() const noexcept { return reg_; }
  const engine_options& options() const noexcept { return opts_; }

 private:
  void on_register(stream_id s, const v1::Register& r);
  void on_piece_finished(task& t, peer& p, const v1::PieceFinished& ev);
  void on_piece_failed(task& t, peer& p, const v1::PieceFailed& ev);
  void on_source_finished(task& t, peer& p, const v1::SourceFinished& ev);
  void on_done(task& t, peer& p);
  void on_failed(task& t, peer& p, const v1::Failed& ev);

  // Elects a source if none and pieces are missing everywhere, or widens the
  // current source's origin list when pieces were lost (a holder left).
  void ensure_source(task& t);
  void make_source(task& t, peer& p, const bitmap& missing);
  const std::string& origin_zone_of(const task& t) const;
  // Whether t's first election, whose best peer so far is on host `best`,
  // waits for a better one: a known host is a seed, in origin zone oz, or
  // faster (host::source_rate) where best is not. The window opens at the
  // first call.
  bool wait_for_better_source(task& t, const host& best, const std::string& oz);
  void check_stall(task& t);
  // Sends child a new Parents if the choice changed (or always when forced).
  void reschedule(task& t, peer& child, bool force, choice_trigger why = choice_trigger::other);
  void reschedule_children_of(task& t, const host_id& parent);

  // --- incremental re-scoring (maintain() / sweep())
  void queue_rescore(const task& t, peer& child, choice_trigger why);
  // After child gained piece i: queues it if a parent that held i has
  // nothing left it lacks.
  void check_parents_after_piece(task& t, peer& child, std::uint32_t i);
  // Queues `zone`'s gateway and the one before it if they differ (a lower
  // host id joined, or the gateway left or failed): it alone fetches across zones.
  void check_gateway(task& t, const std::string& zone, const std::optional<host_id>& before);
  // Queues the task's children short of parents; with `newcomer`, only
  // those the zone rule lets take it (the others stay listed for the next).
  void queue_short_of_parents(task& t, const peer* newcomer = nullptr);
  void queue_full_pass(time_point now);

  // Removes a peer and repairs what depended on it (source, children, empty task).
  // repair=false only unlinks (the same host registers again at once). Returns false if
  // the task was dropped because no peer is left (t is then gone).
  bool remove_peer(task& t, host_id h, std::string_view why, bool repair);
  void remove_host(const host_id& h, v1::Abort::Reason reason, const std::string& message);
  void abort_stream(stream_id s, v1::Abort::Reason reason, const std::string& message);
  // Aborts every peer of t with reason and drops the task.
  void drop_task(task& t, v1::Abort::Reason reason, const std::string& message);
  void poison(task& t, const std::string& message);
  void seal(task& t, std::string_view why);

  void queue_digest(task& t, std::uint32_t index, stream_id reporter);
  void flush_task_digests(task& t, bool sealed);
  // Broadcasts the batches of every task whose batch is due by `by`.
  void flush_digests_due_by(time_point by);

  void emit(stream_id s, v1::Decision d);
  v1::Decision parents_decision(const task& t, const std::vector<host_id>& parents) const;
  v1::TaskInfo task_info(const task& t) const;
  void update_gauges();

  engine_options opts_;
  const clock& clock_;
  decision_sink& sink_;
  scheduler_metrics& metrics_;
  evaluator eval_;
  std::mt19937_64 rng_;
  registry reg_;
  std::set<task_id> pending_digest_tasks_;
  std::set<task_id> pending_elections_;  // waiting for a peer in the origin zone
  // Children to re-score, in order (maintain() / sweep()); each child at most
  // once (peer::rescore_queued), entries of departed peers are skipped.
  struct queued_rescore {
    task_id task;
    host_id host;
    choice_trigger why;
  };
  std::vector<queued_rescore> queue_;
  std::size_t queue_next_ = 0;
  // The full pass's place (the last child it visited; none: the start of
  // full_pass_task_) and the children it may still visit, earned with time.
  task_id full_pass_task_;
  std::optional<host_id> full_pass_host_;
  double full_pass_credit_ = 0;
  std::optional<time_point> last_maintain_;
};

}  // namespace shoal::scheduler
