#pragma once
// The piece cache (DESIGN §7): one preallocated content file per task under
// data_dir/content/<aa>/<task id>, RocksDB metadata under data_dir/meta with
// one column family per record type ("tasks", "pieces", "manifests").
//
// Threading: a store and its task handles are used from one thread (the
// daemon's I/O thread), except task_handle::sync(), which only calls
// fdatasync on the handle's fd and may run on a blocking-work thread.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace shoal::storage {

// A watermark is either a fraction of the filesystem holding data_dir
// ("90%") or an absolute number of cache bytes ("100GiB").
struct watermark {
  enum class kind { percent_of_disk, bytes } type = kind::percent_of_disk;
  double value = 90;  // percent (0..100] or bytes
  static result<watermark> parse(const std::string& text);
};

struct options {
  std::filesystem::path data_dir;
  watermark gc_high{watermark::kind::percent_of_disk, 90};
  watermark gc_low{watermark::kind::percent_of_disk, 80};
  // Injected for tests; defaults to system clock in milliseconds.
  std::function<std::int64_t()> now_ms;
  // Injected for tests: total and free bytes of the filesystem (defaults to statvfs).
  std::function<std::pair<std::uint64_t, std::uint64_t>()> disk_space;
};

struct task_meta {
  std::string id;              // 64 lowercase hex (validated before it gets here)
  std::uint64_t content_length = 0;
  std::uint32_t piece_length = 0;
  std::uint32_t piece_count = 0;
  bool complete = false;
  std::int64_t last_access_ms = 0;
};

struct manifest_record {
  std::string media_type;
  std::string body;
};

class store;

// An open task. Holding one pins the task: GC never evicts it.
class task_handle {
 public:
  ~task_handle();
  task_handle(const task_handle&) = delete;
  task_handle& operator=(const task_handle&) = delete;

  const task_meta& meta() const { return meta_; }
  bool complete() const { return meta_.complete; }
  bool piece_finished(std::uint32_t n) const { return finished_.at(n); }
  const std::vector<bool>& finished() const { return finished_; }
  std::uint32_t finished_count() const;
  // Piece SHA-256 (hex) as recorded with mark_piece_finished; empty if unknown.
  std::string piece_digest(std::uint32_t n) const;

  // pwrite at offset. Refused on a complete task (immutable) or past the end.
  result<void> write(std::uint64_t offset, std::span<const char> data);
  // fdatasync the content file: after it returns, written bytes are durable.
  result<void> sync();
  // Records piece n finished; call only after sync() covered its bytes.
  // sha256_hex may be empty when the piece's digest was not computed.
  result<void> mark_piece_finished(std::uint32_t n, const std::string& sha256_hex);
  // pread; returns bytes read.
  result<std::size_t> read(std::uint64_t offset, std::span<char> out) const;
  // All pieces finished and the whole digest verified by the caller:
  // records the task complete and makes the file read-only (0444).
  result<void> mark_complete();
  // Drops the task: file and records (used when a blob is poisoned).
  result<void> discard();
  int fd() const { return fd_; }
  std::filesystem::path path() const { return path_; }

 private:
  friend class store;
  task_handle(store* s, task_meta meta, std::vector<bool> finished,
              std::vector<std::string> digests, int fd, std::filesystem::path path);
  store* store_;
  task_meta meta_;
  std::vector<bool> finished_;
  std::vector<std::string> digests_;
  int fd_ = -1;
  std::filesystem::path path_;
};

class store {
 public:
  // Opens (or creates) the cache; recovers partial tasks from RocksDB.
  // Errors name the path and what to do (permissions, another shoald running).
  static result<std::unique_ptr<store>> open(options opts);
  ~store();

  // Metadata of a known task (complete or partial), if any.
  std::optional<task_meta> find(const std::string& task_id) const;
  // Creates the task (preallocating its file) or re-opens it when it already
  // exists with the same length; finished pieces are kept. Runs GC first if
  // the new file would pass the high watermark; errc::no_space with a clear
  // message if it still does not fit.
  result<std::shared_ptr<task_handle>> open_task(const std::string& task_id,
                                                 std::uint64_t content_length,
                                                 std::uint32_t piece_length);
  // Opens an existing task (errc::not_found otherwise) and bumps its LRU time.
  result<std::shared_ptr<task_handle>> open_existing(const std::string& task_id);
  // All known tasks.
  std::vector<task_meta> list() const;
  // Removes a task that is not in use (errc::busy if it is).
  result<void> remove(const std::string& task_id);

  // Manifests cached by digest hex.
  result<void> put_manifest(const std::string& digest_hex, const manifest_record& m);
  std::optional<manifest_record> get_manifest(const std::string& digest_hex) const;

  // Bytes of content files in the cache (sum of content lengths).
  std::uint64_t disk_usage() const;
  // Evicts least recently used tasks not in use until below the low watermark
  // (only if above the high one, or if `force`); returns evicted count.
  std::size_t gc(bool force = false);
  std::uint64_t evictions_total() const;

 private:
  struct impl;
  explicit store(std::unique_ptr<impl> p);
  friend class task_handle;
  std::unique_ptr<impl> impl_;
};

}  // namespace shoal::storage
