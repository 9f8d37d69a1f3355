#pragma once
// The task manager: one in-flight download per task (blob), shared by every
// local reader. For now every task is fetched from origin (the registry); the
// swarm (scheduler, parents) plugs in here next.
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
};

class task_manager;

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
  // pread from the content file.
  result<std::size_t> read(std::uint64_t offset, std::span<char> out) const;
  // The content file, for sendfile; valid while the task is held.
  int fd() const { return handle_->fd(); }

 private:
  friend class task_manager;
  void notify();

  digest digest_;
  std::shared_ptr<storage::task_handle> handle_;
  state state_ = state::downloading;
  std::optional<error> error_;
  std::vector<bool> readable_;
  std::vector<std::uint32_t> unsynced_;  // written, not yet durable
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
  // Number of tasks downloading now.
  std::size_t active() const;
  // Stops downloads (shutdown); readers get errc::cancelled.
  void stop();

 private:
  boost::asio::awaitable<void> download(std::shared_ptr<task> t, source::request_target origin);
  boost::asio::awaitable<result<void>> fetch_run(std::shared_ptr<task> t,
                                                 source::request_target origin,
                                                 std::uint32_t first, std::uint32_t last,
                                                 sha256& whole);
  // Queues a written piece for the group commit (hash and fdatasync on the
  // blocking pool, then record it finished).
  void commit(const std::shared_ptr<task>& t, std::uint32_t n);
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
  bool stopped_ = false;
};

}  // namespace shoal::transfer
