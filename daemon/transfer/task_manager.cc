#include "daemon/transfer/task_manager.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/log.h"
#include "common/piece.h"
#include "common/units.h"
#include "daemon/transfer/swarm.h"

namespace shoal::transfer {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;

namespace {
auto log() { return logger("transfer"); }

// Runs on the blocking pool, off the I/O thread: hashes each piece from the
// page cache if asked (the piece digests the swarm verifies against; empty
// otherwise), then fdatasyncs the file so the pieces can be recorded finished.
result<std::vector<std::string>> hash_and_sync_now(storage::task_handle& handle,
                                                   const std::vector<pending_piece>& pieces,
                                                   bool hash_pieces) {
  storage::task_handle* h = &handle;
  const auto& meta = h->meta();
  std::vector<std::string> hexes;
  std::vector<char> buf(hash_pieces ? 1 << 20 : 0);
  for (const auto& p : pieces) {
    const auto n = p.index;
    if (!hash_pieces || !p.sha256.empty()) {
      hexes.push_back(p.sha256);  // already verified against the scheduler's digest
      continue;
    }
    sha256 hash;
    std::uint64_t off = piece_offset(n, meta.piece_length);
    std::uint64_t left = piece_size(n, meta.content_length, meta.piece_length);
    while (left > 0) {
      auto got = h->read(off, std::span<char>(buf.data(), std::min<std::uint64_t>(left, buf.size())));
      if (!got) return std::move(got).error();
      if (*got == 0) return error(errc::io, "short read from " + h->path().string());
      hash.update(std::span<const char>(buf.data(), *got));
      off += *got;
      left -= *got;
    }
    hexes.push_back(hash.finish_hex());
  }
  if (auto r = h->sync(); !r) return std::move(r).error();
  return hexes;
}

awaitable<result<std::vector<std::string>>> hash_and_sync(
    std::shared_ptr<storage::task_handle> h, std::vector<pending_piece> pieces, bool hash_pieces) {
  co_return hash_and_sync_now(*h, pieces, hash_pieces);
}
}  // namespace

metrics::family<metrics::counter>& bytes_by_source(metrics::registry& r) {
  return r.add_counter("shoal_bytes_total",
                       "Blob bytes this daemon got, by source: registry (origin reads), peer "
                       "(verified pieces from other daemons), cache (sent to clients from a "
                       "blob already complete in the cache)",
                       {"source"});
}

metrics::family<metrics::histogram>& piece_fetch_seconds(metrics::registry& r) {
  // 5 ms .. 41 s: a 4 MiB piece on loopback up to a 64 MiB piece on a slow link.
  return r.add_histogram("shoal_piece_fetch_seconds",
                         "Time to fetch one piece, by source: peer (request to verified) or "
                         "registry (first byte asked to piece written)",
                         metrics::exponential_buckets(0.005, 2, 14), {"source"});
}

metrics::family<metrics::counter>& failures_by_kind(metrics::registry& r) {
  return r.add_counter("shoal_failures_total",
                       "Failures by kind: origin (registry download), digest_mismatch (blob), "
                       "peer_piece (piece from a parent), scheduler (unreachable), storage "
                       "(cache full or disk error)",
                       {"kind"});
}

metrics_set::metrics_set(metrics::registry& r)
    : source_bytes(r.add_counter("shoal_source_bytes_total",
                                 "Blob body bytes read from origin registries").with()),
      digest_mismatch(r.add_counter("shoal_digest_mismatch_total",
                                    "Blobs whose bytes did not match their digest").with()),
      origin_failures(r.add_counter("shoal_source_failures_total",
                                    "Origin downloads that failed").with()),
      tasks_active(r.add_gauge("shoal_tasks_active", "Tasks downloading now").with()),
      registry_bytes(bytes_by_source(r).with({"registry"})),
      origin_piece_seconds(piece_fetch_seconds(r).with({"registry"})),
      failures(failures_by_kind(r)) {
  // Every kind is scraped from the start (0), so rate() and alerts see it.
  for (const char* k : {"origin", "digest_mismatch", "peer_piece", "scheduler", "storage"})
    failures.with({k});
  bytes_by_source(r).with({"peer"});
  bytes_by_source(r).with({"cache"});
}

task::task(asio::any_io_executor ex, digest d, std::shared_ptr<storage::task_handle> h)
    : digest_(std::move(d)),
      handle_(std::move(h)),
      readable_(handle_->finished()),
      changed_(ex, asio::steady_timer::time_point::max()) {
  if (handle_->complete()) state_ = state::complete;
  readable_count_ = state_ == state::complete
                        ? handle_->meta().piece_count
                        : static_cast<std::uint32_t>(
                              std::count(readable_.begin(), readable_.end(), true));
  version_ = readable_count_;
}

void task::notify() {
  changed_.cancel();
  for (auto* w : watchers_) w->cancel();
}

void task::set_readable(std::uint32_t n) {
  if (n < readable_.size() && !readable_[n]) {
    readable_[n] = true;
    ++readable_count_;
    ++version_;
  }
  // Relays already under way finish from the buffer they hold; new requests
  // get the piece from the content file.
  receiving_.erase(n);
  notify();
}

std::shared_ptr<partial_piece> task::receiving(std::uint32_t n) const {
  auto it = receiving_.find(n);
  return it == receiving_.end() ? nullptr : it->second;
}

std::vector<std::uint32_t> task::receiving_pieces() const {
  std::vector<std::uint32_t> out;
  out.reserve(receiving_.size());
  for (const auto& [n, p] : receiving_) out.push_back(n);
  return out;
}

bool task::start_receiving(std::uint32_t n, std::shared_ptr<partial_piece> p) {
  if (state_ != state::downloading || readable(n) || receiving_.contains(n)) return false;
  receiving_.emplace(n, std::move(p));
  ++version_;
  notify();
  return true;
}

void task::stop_receiving(std::uint32_t n, const partial_piece* p) {
  auto it = receiving_.find(n);
  if (it == receiving_.end() || it->second.get() != p) return;
  it->second->fail();
  receiving_.erase(it);
  ++version_;
  notify();
}

void task::receiving_written(std::uint32_t n) {
  auto it = receiving_.find(n);
  if (it == receiving_.end() || !it->second->data() || !it->second->whole()) return;
  auto in_file = std::make_shared<partial_piece>(changed_.get_executor(), it->second->size(),
                                                 partial_piece::where::file);
  in_file->advance(in_file->size());
  it->second = std::move(in_file);  // relays under way keep the buffer they hold
}

void task::fail_receiving() {
  auto all = std::move(receiving_);
  receiving_.clear();
  for (auto& [n, p] : all) p->fail();
  if (!all.empty()) ++version_;
}

bool task::claim_upload(std::uint32_t n, std::chrono::steady_clock::time_point now) {
  last_request_ = now;
  // A source holding every piece sends any piece to anyone: the rule kept its
  // uplink for new bytes, and there are none left.
  if (!first_copy_only_ || readable_count_ >= piece_count()) return true;
  if (sent_at_.size() != piece_count()) sent_at_.assign(piece_count(), {});
  if (n >= sent_at_.size()) return false;
  // Gone out whole: the child that has it passes it on. A child whose parents
  // lack it takes another parent from the scheduler, or this one once it
  // holds every piece.
  if (delivered(n)) return false;
  if (sent_at_[n] != std::chrono::steady_clock::time_point{} && now - sent_at_[n] < resend_after())
    return false;
  sent_at_[n] = now;
  return true;
}

std::chrono::steady_clock::duration task::resend_after() const {
  if (send_seconds_ <= 0) return kResendAfter;
  const auto d = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(kResendFactor * send_seconds_));
  return std::clamp<std::chrono::steady_clock::duration>(d, kResendMin, kResendMax);
}

void task::piece_delivered(std::uint32_t n, std::chrono::steady_clock::duration took) {
  if (delivered_.size() != piece_count()) delivered_.assign(piece_count(), false);
  if (n < delivered_.size()) delivered_[n] = true;
  const double s = std::chrono::duration<double>(took).count();
  send_seconds_ = send_seconds_ <= 0 ? s : 0.8 * send_seconds_ + 0.2 * s;
}

std::string task::bitmap() const {
  const std::uint32_t count = piece_count();
  std::string out((count + 7) / 8, '\0');
  for (std::uint32_t i = 0; i < count; ++i)
    if (readable(i)) out[i / 8] = static_cast<char>(out[i / 8] | (1u << (i % 8)));
  return out;
}

awaitable<void> task::wait_change(std::chrono::steady_clock::time_point deadline) {
  asio::steady_timer timer(changed_.get_executor(), deadline);
  watchers_.push_back(&timer);
  auto [ec] = co_await timer.async_wait(asio::as_tuple(use_awaitable));
  (void)ec;  // cancelled = changed; expired = deadline
  std::erase(watchers_, &timer);
}

awaitable<result<void>> task::wait_piece(std::uint32_t n) {
  for (;;) {
    if (state_ == state::complete || (n < readable_.size() && readable_[n])) co_return ok();
    if (state_ == state::failed) co_return *error_;
    if (reader_next_ != n) {
      reader_next_ = n;
      if (on_reader_wait_) on_reader_wait_();
    }
    auto [ec] = co_await changed_.async_wait(asio::as_tuple(use_awaitable));
    (void)ec;  // cancelled = something changed; re-check
  }
}

result<std::size_t> task::read(std::uint64_t offset, std::span<char> out) const {
  return handle_->read(offset, out);
}

task_manager::task_manager(asio::any_io_executor ex, storage::store& store,
                           source::registry_client& origin, metrics::registry& reg, options opts)
    : ex_(ex),
      store_(store),
      origin_(origin),
      metrics_(reg),
      opts_(opts),
      download_limit_(opts.download_rate_limit) {}

task_manager::~task_manager() { blocking_.join(); }

std::size_t task_manager::active() const { return downloading_.size(); }

void task_manager::stop() {
  stopped_ = true;
  auto tasks = downloading_;
  for (auto& [id, t] : tasks) {
    // Record every written piece before stopping (the group commit may be
    // pausing or mid-sync), so a restart does not fetch them again. Blocking
    // here is fine: the daemon is shutting down.
    auto pending = t->committing_;
    pending.insert(pending.end(), t->unsynced_.begin(), t->unsynced_.end());
    if (!pending.empty()) {
      if (auto hexes = hash_and_sync_now(*t->handle_, pending, opts_.piece_digests)) {
        for (std::size_t i = 0; i < pending.size(); ++i)
          (void)t->handle_->mark_piece_finished(pending[i].index, (*hexes)[i]);
      } else {
        log()->warn("task {}: pieces written before shutdown not recorded: {}",
                    t->digest_.hex.substr(0, 12), hexes.error().describe());
      }
    }
    finish(t, error(errc::cancelled, "shoald is shutting down"));
  }
}

result<std::shared_ptr<task>> task_manager::acquire(const digest& d, std::uint64_t content_length,
                                                    const source::request_target& origin,
                                                    bool* hit) {
  if (stopped_) return error(errc::cancelled, "shoald is shutting down");
  if (auto it = downloading_.find(d.hex); it != downloading_.end()) {
    *hit = false;
    return it->second;
  }
  return start_task(d, content_length, origin, hit);
}

std::shared_ptr<task> task_manager::find(const std::string& hex) {
  if (auto it = downloading_.find(hex); it != downloading_.end()) return it->second;
  auto meta = store_.find(hex);
  if (!meta || !meta->complete) return nullptr;
  auto h = store_.open_existing(hex);
  if (!h) return nullptr;
  auto d = parse_digest("sha256:" + hex);
  if (!d) return nullptr;
  return std::make_shared<task>(ex_, *d, std::move(*h));
}

result<std::shared_ptr<task>> task_manager::start_task(const digest& d,
                                                       std::uint64_t content_length,
                                                       const source::request_target& origin,
                                                       bool* hit) {
  if (auto meta = store_.find(d.hex); meta && meta->complete) {
    // Content addressed: a verified copy cannot have another length, so the
    // upstream's answer is wrong; do not send a body that contradicts it.
    if (meta->content_length != content_length)
      return error(errc::upstream_error,
                   "the registry reports " + std::to_string(content_length) + " bytes for " +
                       d.str() + " but the verified cached copy has " +
                       std::to_string(meta->content_length) + " (check the registry)");
    auto h = store_.open_existing(d.hex);
    if (!h) return std::move(h).error();
    *hit = true;
    return std::make_shared<task>(ex_, d, std::move(*h));
  }
  auto h = store_.open_task(d.hex, content_length, piece_length_for(content_length));
  if (!h) return std::move(h).error();
  *hit = false;
  auto t = std::make_shared<task>(ex_, d, std::move(*h));
  downloading_[d.hex] = t;
  metrics_.tasks_active.set(static_cast<double>(downloading_.size()));
  if (swarm_)
    swarm_->start(t, origin);
  else
    asio::co_spawn(ex_, download(t, origin), asio::detached);
  return t;
}

void task_manager::finish(const std::shared_ptr<task>& t, std::optional<error> err) {
  if (t->state_ != task::state::downloading) return;
  if (err) {
    if (err->is(errc::io) || err->is(errc::no_space)) metrics_.failures.with({"storage"}).inc();
    t->state_ = task::state::failed;
    t->error_ = std::move(err);
  } else {
    t->state_ = task::state::complete;
  }
  downloading_.erase(t->digest_.hex);
  metrics_.tasks_active.set(static_cast<double>(downloading_.size()));
  t->fail_receiving();
  t->notify();
}

void task_manager::commit(const std::shared_ptr<task>& t, pending_piece p) {
  t->unsynced_.push_back(std::move(p));
  if (!t->syncing_) {
    t->syncing_ = true;
    asio::co_spawn(ex_, sync_loop(t), asio::detached);
  }
}

awaitable<void> task_manager::sync_loop(std::shared_ptr<task> t) {
  // Group commit: one fdatasync covers every piece written before it started.
  while (!t->unsynced_.empty() && t->state_ == task::state::downloading) {
    if (opts_.commit_interval.count() > 0 && !t->draining_) {
      // Let pieces accumulate: fewer fdatasyncs, and the page cache absorbs
      // bursts instead of pacing the download at the disk's sync speed.
      asio::steady_timer wait(ex_, opts_.commit_interval);
      t->commit_wait_ = &wait;
      auto [ec] = co_await wait.async_wait(asio::as_tuple(use_awaitable));
      (void)ec;  // cancelled by drain(): commit now
      t->commit_wait_ = nullptr;
      if (t->state_ != task::state::downloading) break;
    }
    auto batch = std::move(t->unsynced_);
    t->unsynced_.clear();
    t->committing_ = batch;  // for stop(): a shutdown must not lose them
    auto hexes = co_await asio::co_spawn(blocking_.get_executor(),
                                         hash_and_sync(t->handle_, batch, opts_.piece_digests),
                                         use_awaitable);
    if (t->state_ != task::state::downloading) break;
    if (!hexes) {
      finish(t, std::move(hexes).error());
      break;
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (auto r = t->handle_->mark_piece_finished(batch[i].index, (*hexes)[i]); !r) {
        finish(t, std::move(r).error());
        break;
      }
      batch[i].sha256 = (*hexes)[i];
      log()->trace("task {}: piece {} recorded (hook {})", t->digest_.hex.substr(0, 12),
                   batch[i].index, bool(t->on_durable_));
      if (t->on_durable_) t->on_durable_(batch[i]);
    }
    t->committing_.clear();
  }
  t->committing_.clear();
  t->syncing_ = false;
  t->notify();
}

awaitable<result<void>> task_manager::drain(std::shared_ptr<task> t) {
  t->draining_ = true;
  if (t->commit_wait_) t->commit_wait_->cancel();
  while (t->syncing_ || !t->unsynced_.empty()) {
    if (t->state_ == task::state::failed) co_return *t->error_;
    auto [ec] = co_await t->changed_.async_wait(asio::as_tuple(use_awaitable));
    (void)ec;
  }
  if (t->state_ == task::state::failed) co_return *t->error_;
  co_return ok();
}

awaitable<void> task_manager::download(std::shared_ptr<task> t, source::request_target origin) {
  const auto& meta = t->handle_->meta();
  const std::uint32_t count = meta.piece_count;
  sha256 whole;
  std::vector<char> buf(opts_.read_chunk);
  log()->info("task {}: downloading {} ({} pieces of {}, {} already cached) from {}/{}",
              t->digest_.hex.substr(0, 12), format_bytes(meta.content_length), count,
              format_bytes(meta.piece_length), t->handle_->finished_count(), origin.registry,
              origin.repository);
  std::uint32_t n = 0;
  while (n < count) {
    if (stopped_ || t->state_ != task::state::downloading) co_return;
    if (t->handle_->piece_finished(n)) {
      // Finished before a restart: hash it from disk, never from origin again.
      std::uint64_t off = piece_offset(n, meta.piece_length);
      std::uint64_t left = piece_size(n, meta.content_length, meta.piece_length);
      while (left > 0) {
        auto got = t->handle_->read(off, std::span<char>(buf.data(), std::min<std::uint64_t>(
                                                                          left, buf.size())));
        if (!got || *got == 0) {
          finish(t, got ? error(errc::io, "short read from cache file " +
                                              t->handle_->path().string())
                        : std::move(got).error());
          co_return;
        }
        whole.update(std::span<const char>(buf.data(), *got));
        off += *got;
        left -= *got;
      }
      ++n;
      continue;
    }
    std::uint32_t last = n;
    while (last + 1 < count && !t->handle_->piece_finished(last + 1)) ++last;
    auto r = co_await fetch_run(t, origin, n, last, &whole);
    if (!r) {
      metrics_.origin_failed();
      log()->error("task {}: origin download failed: {}", t->digest_.hex.substr(0, 12),
                   r.error().describe());
      finish(t, std::move(r).error());
      co_return;
    }
    n = last + 1;
  }
  // Everything but the held-back last piece is queued; verify the whole blob.
  std::string got = whole.finish_hex();
  if (const auto want = expected_content_hex(t->digest_, origin); !want.empty() && got != want) {
    metrics_.blob_mismatch();
    error e(errc::digest_mismatch, "blob " + t->digest_.str() + " from " + origin.registry + "/" +
                                       origin.repository + ": content hashes to sha256:" + got +
                                       " (the registry served corrupt data; nothing was cached)");
    log()->error("task {}: {}", t->digest_.hex.substr(0, 12), e.message);
    finish(t, e);
    // Discard at once, before a new request can re-create the task: waiting
    // for a running fdatasync first let a late discard delete the next,
    // good download. A group commit still running fails harmlessly (its
    // result is dropped: the task is no longer downloading).
    if (auto r = t->handle_->discard(); !r) log()->warn("discard: {}", r.error().describe());
    co_return;
  }
  // The last piece was held back until the digest matched: readers may have
  // it now; then make everything durable and seal the task.
  const std::uint32_t tail = count - 1;
  t->set_readable(tail);
  if (auto r = co_await drain(t); !r) {
    finish(t, std::move(r).error());
    co_return;
  }
  if (!t->handle_->piece_finished(tail)) {
    std::vector<pending_piece> last(1, pending_piece{tail, {}, {}});
    auto hexes = co_await asio::co_spawn(blocking_.get_executor(),
                                         hash_and_sync(t->handle_, std::move(last), opts_.piece_digests),
                                         use_awaitable);
    if (!hexes) {
      finish(t, std::move(hexes).error());
      co_return;
    }
    if (auto r = t->handle_->mark_piece_finished(tail, hexes->front()); !r) {
      finish(t, std::move(r).error());
      co_return;
    }
  }
  if (auto r = t->handle_->mark_complete(); !r) {
    finish(t, std::move(r).error());
    co_return;
  }
  log()->info("task {}: complete, digest verified", t->digest_.hex.substr(0, 12));
  finish(t, std::nullopt);
}

awaitable<void> task_manager::wait_idle(std::shared_ptr<task> t) {
  while (t->syncing_) {
    auto [ec] = co_await t->changed_.async_wait(asio::as_tuple(use_awaitable));
    (void)ec;
  }
}

awaitable<result<void>> task_manager::fetch_run(std::shared_ptr<task> t,
                                                source::request_target origin,
                                                std::uint32_t first, std::uint32_t last,
                                                sha256* whole, std::function<bool()> cancelled,
                                                std::function<void(std::uint32_t)> on_piece) {
  const auto& meta = t->handle_->meta();
  const std::uint64_t begin = piece_offset(first, meta.piece_length);
  const std::uint64_t end = piece_offset(last, meta.piece_length) +
                            piece_size(last, meta.content_length, meta.piece_length);
  const auto asked = std::chrono::steady_clock::now();
  auto stream = co_await origin_.open_blob(origin, t->digest_.str(),
                                           begin, begin == 0 && end == meta.content_length ? 0 : end);
  if (!stream) co_return std::move(stream).error();
  std::vector<char> buf(opts_.read_chunk);
  // The first piece's time includes the request, as a parent fetch's does.
  auto piece_start = asked;
  for (std::uint32_t n = first; n <= last; ++n) {
    std::uint64_t off = piece_offset(n, meta.piece_length);
    std::uint64_t left = piece_size(n, meta.content_length, meta.piece_length);
    // Other daemons may have the piece relayed from the file as it arrives.
    auto partial = std::make_shared<partial_piece>(ex_, left, partial_piece::where::file);
    t->start_receiving(n, partial);
    // Ends the relays if this run stops before the piece is whole.
    struct stop_relay {
      task& t;
      std::uint32_t n;
      const partial_piece* p;
      ~stop_relay() {
        if (!p->whole()) t.stop_receiving(n, p);
      }
    } relay_guard{*t, n, partial.get()};
    while (left > 0) {
      if (stopped_ || t->state_ != task::state::downloading || (cancelled && cancelled()))
        co_return error(errc::cancelled, "download of " + t->digest_.str() + " stopped");
      // Fill a whole chunk before writing and hashing: sockets hand out a few
      // KiB at a time, and per-call costs dominate at GiB/s.
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
      co_await download_limit_.acquire(want);
      std::size_t filled = 0;
      while (filled < want) {
        auto got = co_await (*stream)->read_some(std::span<char>(buf.data() + filled, want - filled));
        if (!got) co_return std::move(got).error();
        if (*got == 0)
          co_return error(errc::upstream_error,
                          "blob " + t->digest_.str() + " from " + origin.registry + "/" +
                              origin.repository + ": body ended early at byte " +
                              std::to_string(off + filled) + " of " +
                              std::to_string(meta.content_length));
        filled += *got;
      }
      std::span<const char> data(buf.data(), filled);
      if (auto w = t->handle_->write(off, data); !w) co_return std::move(w).error();
      partial->advance(filled);
      if (whole) whole->update(data);
      metrics_.source_bytes.inc(static_cast<double>(filled));
      metrics_.registry_bytes.inc(static_cast<double>(filled));
      off += filled;
      left -= filled;
    }
    const auto piece_end = std::chrono::steady_clock::now();
    metrics_.origin_piece_seconds.observe(
        std::chrono::duration<double>(piece_end - piece_start).count());
    piece_start = piece_end;
    if (on_piece) {
      on_piece(n);
    } else if (n + 1 < meta.piece_count) {  // the last piece is held back until the blob verifies
      // Readers may stream the piece from the page cache now; it is recorded
      // finished (for crash recovery) only once fdatasync made it durable.
      t->set_readable(n);
      commit(t, pending_piece{n, {}, {}});
    }
  }
  co_return ok();
}

}  // namespace shoal::transfer
