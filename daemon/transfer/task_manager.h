#pragma once
// The task manager: one in-flight download per task (blob), shared by every
// local reader. Without a swarm every task is fetched from origin (the
// registry); with one (set_swarm), the swarm session decides where pieces
// come from (daemon/transfer/swarm.h).
//
// A task moves: downloading -> complete | failed. Pieces are written to the
// piece cache as they arrive and readers stream them from the page cache at
// once; a piece is recorded finished (what survives a crash) only after a
// group-committed fdatasync on a blocking-work thread. The last piece is held
// back until the whole blob's SHA-256 matches its digest, so a reader never
// receives a complete corrupt blob: it gets an error and aborts.
//
// Threading: everything runs on the daemon's I/O executor (one thread);
// fdatasync is the only work sent to the blocking pool.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/digest.h"
#include "common/metrics.h"
#include "common/rate_limiter.h"
#include "common/sha256.h"
#include "common/result.h"
#include "daemon/source/registry_client.h"
#include "daemon/storage/store.h"
#include "daemon/transfer/partial_piece.h"

namespace shoal::transfer {

struct options {
  std::uint64_t download_rate_limit = 0;  // bytes/s over all origin reads, 0 = unlimited
  std::size_t read_chunk = 1 << 20;       // bytes per origin read
  // Pause between group commits (fdatasync + record). Longer: fewer syncs and
  // more re-fetching after a crash (at most this much download time is lost).
  std::chrono::milliseconds commit_interval{500};
  // Record each piece's SHA-256 (a second hash pass: only worth it when a
  // swarm verifies pieces against them; the whole blob is always verified).
  bool piece_digests = false;
};

struct metrics_set {
  explicit metrics_set(metrics::registry& r);
  metrics::counter& source_bytes;      // shoal_source_bytes_total
  metrics::counter& digest_mismatch;   // shoal_digest_mismatch_total
  metrics::counter& origin_failures;   // shoal_source_failures_total
  metrics::gauge& tasks_active;        // shoal_tasks_active
  metrics::counter& registry_bytes;    // shoal_bytes_total{source="registry"}
  metrics::histogram& origin_piece_seconds;  // shoal_piece_fetch_seconds{source="registry"}
  metrics::family<metrics::counter>& failures;  // shoal_failures_total{kind}
  // An origin download (or a source peer's origin run) failed.
  void origin_failed() {
    origin_failures.inc();
    failures.with({"origin"}).inc();
  }
  // A blob's bytes did not hash to its digest.
  void blob_mismatch() {
    digest_mismatch.inc();
    failures.with({"digest_mismatch"}).inc();
  }
};

// The hex the whole content must hash to: the blob digest for registry
// blobs; for URL tasks (`shoalctl get`) the digest the user gave, or ""
// (not verified as a whole) when none was given.
inline std::string expected_content_hex(const digest& task_id, const source::request_target& o) {
  if (o.url.empty()) return task_id.hex;
  return o.content_digest.starts_with("sha256:") ? o.content_digest.substr(7) : std::string();
}
// Families shared by the modules that add to them (one name, one help text,
// one bucket layout): bytes a daemon got by source, piece fetch latency by
// source, and failures by kind.
metrics::family<metrics::counter>& bytes_by_source(metrics::registry& r);
metrics::family<metrics::histogram>& piece_fetch_seconds(metrics::registry& r);
metrics::family<metrics::counter>& failures_by_kind(metrics::registry& r);

class task_manager;
class swarm;
class swarm_session;

// A written piece waiting for the group commit. `sha256` is already known for
// pieces verified against the scheduler's digest (empty: hash it when asked).
struct pending_piece {
  std::uint32_t index = 0;
  std::string sha256;
  std::string parent;  // host id it came from; empty = origin
};

class task : public std::enable_shared_from_this<task> {
 public:
  enum class state { downloading, complete, failed };

  task(boost::asio::any_io_executor ex, digest d, std::shared_ptr<storage::task_handle> h);
  const digest& id() const { return digest_; }
  state current() const { return state_; }
  std::uint64_t content_length() const { return handle_->meta().content_length; }
  std::uint32_t piece_length() const { return handle_->meta().piece_length; }
  // Waits until piece n is readable (written; for the last piece: the blob
  // verified). Errors when the download failed (the reader must abort).
  boost::asio::awaitable<result<void>> wait_piece(std::uint32_t n);
  // Whether piece n can be read now (without waiting).
  bool readable(std::uint32_t n) const {
    return state_ == state::complete || (n < readable_.size() && readable_[n]);
  }
  // Version of what the piece server's /bitmap reports: it moves whenever a
  // piece becomes readable or starts or stops being received (the long-poll
  // waits for it to change). A complete task's is its piece count.
  std::uint64_t version() const { return version_; }
  // Readable pieces, bit i = bit (i % 8) of byte (i / 8), LSB first.
  std::string bitmap() const;
  // Pieces being received now, which the piece server relays before they are
  // whole (see partial_piece.h); nullptr when piece n is not being received.
  std::shared_ptr<partial_piece> receiving(std::uint32_t n) const;
  // Their indices, ascending, for the bitmap's X-Shoal-Receiving header.
  std::vector<std::uint32_t> receiving_pieces() const;
  // Starts relaying piece n from `p` unless another receive of it is already
  // relayed (an endgame's second copy). Returns whether `p` is the one.
  bool start_receiving(std::uint32_t n, std::shared_ptr<partial_piece> p);
  // `p` stops being piece n's relayed receive: whole and readable, dropped,
  // or failed (then relays in progress end too).
  void stop_receiving(std::uint32_t n, const partial_piece* p);
  // Piece n, whole and not readable yet (the held-back last piece), is in the
  // content file: relays from now on read it there, not from a buffer.
  void receiving_written(std::uint32_t n);
  // Waits until something changes (a piece, the state) or the deadline.
  boost::asio::awaitable<void> wait_change(std::chrono::steady_clock::time_point deadline);
  std::uint32_t piece_count() const { return handle_->meta().piece_count; }
  // Piece server: whether piece n may be sent to another daemon now, and if
  // so, records that it was. While this daemon is a swarm's source reading
  // origin (see swarm.cc), each piece goes to one daemon only: the source's
  // uplink is what every byte of the swarm has to pass through, and children
  // pass pieces on to each other. A send that did not complete (see
  // piece_delivered) may be repeated after resend_after(); a delivered piece
  // is not sent again (at 16 nodes, where a child's 8 parents may all lack a
  // piece, second copies took ~10% of the source's uplink while it read:
  // 24.87 s against 25.28 s, bench/README.md). Otherwise, and once this
  // daemon holds every piece, true.
  bool claim_upload(std::uint32_t n, std::chrono::steady_clock::time_point now);
  void set_first_copy_only(bool on) { first_copy_only_ = on; }
  // How long a piece whose send has not completed stays its first copy's:
  // time for the child to receive it and pass it on. 16 nodes at 25 MiB/s
  // (bench/swarm, when delivered pieces went again too): the source sent
  // 1.62 copies with a factor of 3, 1.33 with 8, 1.23 with 16 (no faster).
  // kResendFactor times the recent send time (an EWMA of piece_delivered's),
  // within [kResendMin, kResendMax]; kResendAfter before any piece was
  // delivered.
  std::chrono::steady_clock::duration resend_after() const;
  static constexpr std::chrono::milliseconds kResendAfter{2000};
  static constexpr std::chrono::milliseconds kResendMin{500};
  static constexpr std::chrono::milliseconds kResendMax{30000};
  static constexpr double kResendFactor = 8.0;
  // Piece server: piece n went out whole to another daemon in `took`.
  void piece_delivered(std::uint32_t n, std::chrono::steady_clock::duration took);
  bool delivered(std::uint32_t n) const { return n < delivered_.size() && delivered_[n]; }
  // When another daemon last asked for a piece of this task.
  std::chrono::steady_clock::time_point last_piece_request() const { return last_request_; }
  // pread from the content file.
  result<std::size_t> read(std::uint64_t offset, std::span<char> out) const;
  // The content file, for sendfile; valid while the task is held.
  int fd() const { return handle_->fd(); }

 private:
  friend class task_manager;
  friend class swarm;
  friend class swarm_session;
  void notify();
  // Marks piece n readable (idempotent) and wakes waiters; it is served
  // from the content file from now on, no longer relayed.
  void set_readable(std::uint32_t n);
  // Ends every relayed receive (the task failed or starts over).
  void fail_receiving();

  digest digest_;
  std::shared_ptr<storage::task_handle> handle_;
  state state_ = state::downloading;
  std::optional<error> error_;
  std::vector<bool> readable_;
  std::uint32_t readable_count_ = 0;
  std::map<std::uint32_t, std::shared_ptr<partial_piece>> receiving_;
  // Set by the swarm while this daemon is the task's source: when each piece
  // last went to another daemon (see claim_upload).
  bool first_copy_only_ = false;
  std::vector<std::chrono::steady_clock::time_point> sent_at_;
  std::vector<bool> delivered_;
  double send_seconds_ = 0;  // EWMA of piece send times, 0 = none yet
  std::chrono::steady_clock::time_point last_request_{};
  std::vector<pending_piece> unsynced_;  // written, not yet durable
  std::vector<pending_piece> committing_;  // the batch being synced now
  std::uint64_t version_ = 0;
  // Lowest piece a local reader waits for (the swarm fetches it first).
  std::uint32_t reader_next_ = UINT32_MAX;
  std::vector<boost::asio::steady_timer*> watchers_;  // wait_change() timers
  // Called on the I/O thread once a piece is durable and recorded (swarm: PieceFinished).
  std::function<void(const pending_piece&)> on_durable_;
  std::function<void()> on_reader_wait_;  // a reader started waiting for reader_next_
  bool syncing_ = false;
  bool draining_ = false;                           // commit at once from now on
  boost::asio::steady_timer* commit_wait_ = nullptr;  // the group commit's pause, if waiting
  boost::asio::steady_timer changed_;  // cancelled to wake every waiter
};

class task_manager {
 public:
  task_manager(boost::asio::any_io_executor ex, storage::store& store,
               source::registry_client& origin, metrics::registry& reg, options opts);
  ~task_manager();

  // The task for a blob: complete from the cache, joined if already being
  // downloaded, otherwise created (resuming finished pieces) and its origin
  // download started. `hit` tells whether the cache already had it complete.
  result<std::shared_ptr<task>> acquire(const digest& d, std::uint64_t content_length,
                                        const source::request_target& origin, bool* hit);
  // The task if it is downloading or complete in the cache (for the piece
  // server); nullptr otherwise. Never starts a download.
  std::shared_ptr<task> find(const std::string& hex);
  // Routes new downloads through the swarm (nullptr: origin only).
  void set_swarm(swarm* s) { swarm_ = s; }
  const options& opts() const { return opts_; }
  rate_limiter& download_limit() { return download_limit_; }
  metrics_set& metrics() { return metrics_; }
  boost::asio::any_io_executor executor() const { return ex_; }
  // Number of tasks downloading now.
  std::size_t active() const;
  // Stops downloads (shutdown); readers get errc::cancelled.
  void stop();

 private:
  friend class swarm;
  friend class swarm_session;
  result<std::shared_ptr<task>> start_task(const digest& d, std::uint64_t content_length,
                                           const source::request_target& origin, bool* hit);
  boost::asio::awaitable<void> download(std::shared_ptr<task> t, source::request_target origin);
  boost::asio::awaitable<result<void>> fetch_run(std::shared_ptr<task> t,
                                                 source::request_target origin,
                                                 std::uint32_t first, std::uint32_t last,
                                                 sha256* whole,
                                                 std::function<bool()> cancelled = nullptr,
                                                 std::function<void(std::uint32_t)> on_piece = nullptr);
  // Queues a written piece for the group commit (hash and fdatasync on the
  // blocking pool, then record it finished).
  void commit(const std::shared_ptr<task>& t, pending_piece p);
  boost::asio::awaitable<void> sync_loop(std::shared_ptr<task> t);
  // Waits until every queued piece is durable and recorded.
  boost::asio::awaitable<result<void>> drain(std::shared_ptr<task> t);
  // Waits until no fdatasync is running for the task (before discarding it).
  boost::asio::awaitable<void> wait_idle(std::shared_ptr<task> t);
  void finish(const std::shared_ptr<task>& t, std::optional<error> err);

  boost::asio::any_io_executor ex_;
  storage::store& store_;
  source::registry_client& origin_;
  metrics_set metrics_;
  options opts_;
  rate_limiter download_limit_;
  boost::asio::thread_pool blocking_{2};
  std::map<std::string, std::shared_ptr<task>> downloading_;
  swarm* swarm_ = nullptr;
  bool stopped_ = false;
};

}  // namespace shoal::transfer
