// The piece cache: content files, RocksDB records, recovery, LRU GC.
// See daemon/storage/README.md for the on-disk layout and the crash argument.

#include "daemon/storage/store.h"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/status.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <string_view>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "common/log.h"
#include "common/units.h"

namespace shoal::storage {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kIdLength = 64;
// task id + '/' + 4-byte big-endian piece index
constexpr std::size_t kPieceKeyLength = kIdLength + 1 + 4;
constexpr char kRecordVersion = 1;
// version, content_length (8), piece_length (4), flags (1), last_access_ms (8)
constexpr std::size_t kTaskRecordLength = 1 + 8 + 4 + 1 + 8;
constexpr std::uint8_t kFlagComplete = 1;
// Free space kept beyond a new file so RocksDB and the rest of the node still
// have room: 1% of the filesystem, at most 64 MiB.
constexpr std::uint64_t kMaxReserve = 64ull << 20;

spdlog::logger& slog() {
  static const std::shared_ptr<spdlog::logger> l = shoal::logger("storage");
  return *l;
}

std::string sys_error(int e) { return std::generic_category().message(e); }

bool is_lower_hex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

bool is_task_id(std::string_view s) { return s.size() == kIdLength && is_lower_hex(s); }

// "abcdef012345…" for messages people read; logs carry the full id.
std::string short_id(std::string_view id) {
  return id.size() > 12 ? std::string(id.substr(0, 12)) + "\u2026" : std::string(id);
}

std::string printable(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 80)) out.push_back((c >= 0x20 && c < 0x7f) ? c : '?');
  return out + (s.size() > 80 ? "\u2026\"" : "\"");
}

void put_be(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_be(std::string_view s, std::size_t pos, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(s[pos + i]);
  return v;
}

std::optional<std::uint32_t> count_pieces(std::uint64_t length, std::uint32_t piece_length) {
  if (piece_length == 0) return std::nullopt;
  const std::uint64_t n = length / piece_length + (length % piece_length != 0 ? 1 : 0);
  if (n > UINT32_MAX) return std::nullopt;
  return static_cast<std::uint32_t>(n);
}

std::string encode_task(const task_meta& m) {
  std::string v;
  v.reserve(kTaskRecordLength);
  v.push_back(kRecordVersion);
  put_be(v, m.content_length, 8);
  put_be(v, m.piece_length, 4);
  v.push_back(static_cast<char>(m.complete ? kFlagComplete : 0));
  put_be(v, static_cast<std::uint64_t>(m.last_access_ms), 8);
  return v;
}

std::optional<task_meta> decode_task(std::string_view id, std::string_view v) {
  if (v.size() != kTaskRecordLength || v[0] != kRecordVersion) return std::nullopt;
  task_meta m;
  m.id = std::string(id);
  m.content_length = get_be(v, 1, 8);
  m.piece_length = static_cast<std::uint32_t>(get_be(v, 9, 4));
  const auto flags = static_cast<std::uint8_t>(v[13]);
  if ((flags & ~kFlagComplete) != 0) return std::nullopt;
  m.complete = (flags & kFlagComplete) != 0;
  m.last_access_ms = static_cast<std::int64_t>(get_be(v, 14, 8));
  const auto n = count_pieces(m.content_length, m.piece_length);
  if (!n) return std::nullopt;
  m.piece_count = *n;
  return m;
}

std::string piece_key(std::string_view id, std::uint32_t n) {
  std::string k(id);
  k.push_back('/');
  put_be(k, n, 4);
  return k;
}
// All piece keys of a task lie in [pieces_begin, pieces_end): '0' sorts right after '/'.
std::string pieces_begin(std::string_view id) { return std::string(id) + "/"; }
std::string pieces_end(std::string_view id) { return std::string(id) + "0"; }

// Manifest record: version, 4-byte big-endian media type length, media type, body.
std::string encode_manifest(const manifest_record& m) {
  std::string v;
  v.reserve(5 + m.media_type.size() + m.body.size());
  v.push_back(kRecordVersion);
  put_be(v, m.media_type.size(), 4);
  v += m.media_type;
  v += m.body;
  return v;
}

std::optional<manifest_record> decode_manifest(std::string_view v) {
  if (v.size() < 5 || v[0] != kRecordVersion) return std::nullopt;
  const std::uint64_t n = get_be(v, 1, 4);
  if (n > v.size() - 5) return std::nullopt;
  return manifest_record{std::string(v.substr(5, n)), std::string(v.substr(5 + n))};
}

rocksdb::Slice slice(std::string_view s) { return {s.data(), s.size()}; }
std::string_view view(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

std::string describe(const watermark& w) {
  if (w.type == watermark::kind::bytes) return format_bytes(static_cast<std::uint64_t>(w.value));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g%%", w.value);
  return buf;
}

result<void> check_watermark(const watermark& w, const char* flag) {
  const bool percent = w.type == watermark::kind::percent_of_disk;
  if (!(w.value > 0) || (percent && w.value > 100)) {
    return error(errc::invalid_argument, std::string(flag) + " " + describe(w) +
                                             (percent ? " must be greater than 0% and at most 100%"
                                                      : " must be greater than 0 bytes"));
  }
  return ok();
}

result<void> fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return error(errc::io, "cannot open directory " + dir.string() + " to sync it: " +
                               sys_error(errno) + " (check permissions under --data-dir)");
  }
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  if (rc != 0) {
    return error(errc::io, "fsync " + dir.string() + ": " + sys_error(e) +
                               " (check the disk under --data-dir)");
  }
  return ok();
}

enum class file_problem { none, missing, wrong_size };

}  // namespace

// ---------------------------------------------------------------------------
// store::impl: everything the store owns. Used only from the store's thread.

struct store::impl {
  struct live_entry {
    std::weak_ptr<task_handle> handle;
    const task_handle* raw = nullptr;
  };
  struct eviction {
    std::size_t count = 0;
    std::uint64_t bytes = 0;
  };
  struct disk {
    std::uint64_t total = 0;
    std::uint64_t free = 0;
  };

  options opts;
  fs::path content_dir;
  fs::path meta_dir;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  rocksdb::ColumnFamilyHandle* tasks_cf = nullptr;
  rocksdb::ColumnFamilyHandle* pieces_cf = nullptr;
  rocksdb::ColumnFamilyHandle* manifests_cf = nullptr;
  // Every known task (complete or partial); the source of truth is the tasks CF.
  std::unordered_map<std::string, task_meta> tasks;
  // Tasks with a live handle: pinned, never evicted. One handle per task.
  std::unordered_map<std::string, live_entry> live;
  std::uint64_t usage = 0;
  std::uint64_t evictions = 0;

  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  ~impl() {
    if (!db) return;
    if (auto s = db->SyncWAL(); !s.ok()) {
      slog().warn("syncing the metadata log in {} at shutdown: {}", meta_dir.string(),
                  s.ToString());
    }
    for (auto* h : cfs) db->DestroyColumnFamilyHandle(h);
    if (auto s = db->Close(); !s.ok()) {
      slog().warn("closing metadata database {}: {}", meta_dir.string(), s.ToString());
    }
  }

  fs::path path_of(std::string_view id) const {
    return content_dir / std::string(id.substr(0, 2)) / std::string(id);
  }

  disk measure() const {
    const auto [total, free] = opts.disk_space();
    return {total, free};
  }

  result<void> write(rocksdb::WriteBatch& b, bool sync, const std::string& what) {
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    if (auto s = db->Write(wo, &b); !s.ok()) {
      return error(errc::io, what + ": writing metadata to " + meta_dir.string() +
                                 " failed: " + s.ToString() +
                                 " (check free space and the disk under --data-dir)");
    }
    return ok();
  }

  void drop_records(rocksdb::WriteBatch& b, std::string_view id) {
    b.Delete(tasks_cf, slice(id));
    b.DeleteRange(pieces_cf, pieces_begin(id), pieces_end(id));
  }

  // Persists an LRU time; losing it only makes the task look older.
  void persist_access(const task_meta& m) {
    rocksdb::WriteBatch b;
    b.Put(tasks_cf, m.id, encode_task(m));
    if (auto r = write(b, false, "recording access to task " + short_id(m.id)); !r) {
      slog().warn("{}", r.error().message);
    }
  }

  void forget(const std::string& id) {
    auto it = tasks.find(id);
    if (it == tasks.end()) return;
    usage -= std::min(usage, it->second.content_length);
    tasks.erase(it);
  }

  // Drops tasks: first their records, in one synced batch, then their files.
  // The sync matters: if the deletes could be lost in a power cut while a new
  // file with the same id survived, old piece records would describe it.
  result<void> drop(const std::vector<std::string>& ids, std::string_view why) {
    rocksdb::WriteBatch b;
    for (const auto& id : ids) drop_records(b, id);
    if (auto r = write(b, true, "dropping " + std::to_string(ids.size()) + " task(s)"); !r) {
      return r;
    }
    for (const auto& id : ids) {
      const fs::path p = path_of(id);
      if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
        slog().warn("task {}: cannot remove {}: {} (it is removed at the next start)", id,
                    p.string(), sys_error(errno));
      }
      const auto it = tasks.find(id);
      const std::uint64_t length = it == tasks.end() ? 0 : it->second.content_length;
      forget(id);
      slog().info("task {}: {}, {} freed", id, why, format_bytes(length));
    }
    return ok();
  }

  std::pair<std::vector<bool>, std::vector<std::string>> load_pieces(const task_meta& m) const {
    std::vector<bool> finished(m.piece_count, m.complete);
    std::vector<std::string> digests(m.piece_count);
    const std::string begin = pieces_begin(m.id);
    const std::string end = pieces_end(m.id);
    const rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, pieces_cf));
    for (it->Seek(begin); it->Valid(); it->Next()) {
      const std::string_view key = view(it->key());
      if (key.size() != kPieceKeyLength) continue;
      const auto n = static_cast<std::uint32_t>(get_be(key, kIdLength + 1, 4));
      if (n >= m.piece_count) continue;
      finished[n] = true;
      digests[n] = it->value().ToString();
    }
    if (!it->status().ok()) {
      slog().warn("task {}: reading piece records: {} (unread pieces are fetched again)", m.id,
                  it->status().ToString());
    }
    return {std::move(finished), std::move(digests)};
  }

  // Opens an existing task's content file: read-only when complete, read-write
  // when partial, and puts the mode back in line with the record (a crash
  // between fchmod and the "complete" record can leave them apart).
  result<int> open_content(const task_meta& m, file_problem& problem) const {
    problem = file_problem::none;
    const fs::path p = path_of(m.id);
    const int flags = (m.complete ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    int fd = ::open(p.c_str(), flags);
    if (fd < 0 && errno == EACCES && !m.complete && ::chmod(p.c_str(), 0644) == 0) {
      fd = ::open(p.c_str(), flags);
    }
    if (fd < 0) {
      const int e = errno;
      if (e == ENOENT) {
        problem = file_problem::missing;
        return error(errc::not_found,
                     "content file " + p.string() + " of task " + short_id(m.id) + " is missing");
      }
      return error(errc::io, "cannot open " + p.string() + ": " + sys_error(e) +
                                 " (check that the user running shoald owns --data-dir)");
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      return error(errc::io, "cannot stat " + p.string() + ": " + sys_error(e) +
                                 " (check the disk under --data-dir)");
    }
    if (!S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) != m.content_length) {
      ::close(fd);
      problem = file_problem::wrong_size;
      return error(errc::corrupt, "content file " + p.string() + " of task " + short_id(m.id) +
                                      " has " + std::to_string(st.st_size) + " bytes, expected " +
                                      std::to_string(m.content_length));
    }
    const bool fix = m.complete ? (st.st_mode & 0222) != 0 : (st.st_mode & S_IWUSR) == 0;
    if (fix && ::fchmod(fd, m.complete ? 0444 : 0644) != 0) {
      slog().warn("task {}: cannot chmod {}: {}", m.id, p.string(), sys_error(errno));
    }
    return fd;
  }

  // Creates and preallocates a task's content file, durable (file and
  // directory entries synced) before the caller records the task.
  result<int> create_file(const std::string& id, std::uint64_t length) const {
    const fs::path p = path_of(id);
    const fs::path dir = p.parent_path();
    std::error_code ec;
    const bool made_dir = fs::create_directories(dir, ec);
    if (ec) {
      return error(errc::io, "cannot create directory " + dir.string() + ": " + ec.message() +
                                 " (check that the user running shoald owns --data-dir)");
    }
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
      return error(errc::io, "cannot replace stale content file " + p.string() + ": " +
                                 sys_error(errno) + " (check permissions under --data-dir)");
    }
    const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      return error(errc::io, "cannot create " + p.string() + ": " + sys_error(errno) +
                                 " (check that the user running shoald owns --data-dir)");
    }
    const auto fail = [&](errc code, std::string msg) -> result<int> {
      ::close(fd);
      ::unlink(p.c_str());
      return error(code, std::move(msg));
    };
    if (length > 0) {
      if (length > static_cast<std::uint64_t>(LLONG_MAX)) {
        return fail(errc::too_large, "task " + short_id(id) + ": content length " +
                                         std::to_string(length) + " is too large for a file");
      }
      const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(length));
      if (rc != 0) {
        return fail(rc == ENOSPC || rc == EDQUOT ? errc::no_space : errc::io,
                    "preallocating " + format_bytes(length) + " for task " + short_id(id) + " at " +
                        p.string() + ": " + sys_error(rc) +
                        (rc == ENOSPC || rc == EDQUOT ? " (free disk space under --data-dir)"
                                                      : " (check the disk under --data-dir)"));
      }
    }
    if (::fsync(fd) != 0) {
      return fail(errc::io, "fsync " + p.string() + ": " + sys_error(errno) +
                                " (check the disk under --data-dir)");
    }
    auto synced = fsync_dir(dir);
    if (synced && made_dir) synced = fsync_dir(content_dir);
    if (!synced) return fail(errc::io, synced.error().message);
    return fd;
  }

  bool over(const watermark& w, disk d, std::uint64_t extra, std::uint64_t freed) const {
    const auto minus = [](std::uint64_t a, std::uint64_t b) { return a > b ? a - b : 0; };
    if (w.type == watermark::kind::bytes) {
      return static_cast<double>(minus(usage + extra, freed)) > w.value;
    }
    if (d.total == 0) return false;  // statvfs failed: no basis for a percentage
    const std::uint64_t used = minus(minus(d.total, d.free) + extra, freed);
    return static_cast<double>(used) * 100.0 > w.value * static_cast<double>(d.total);
  }

  // Evicts tasks without a live handle, least recently used first, while
  // keep_going(bytes freed so far) holds. All records go in one synced batch.
  template <class Pred>
  eviction evict_lru(Pred keep_going) {
    std::vector<std::tuple<std::int64_t, std::string, std::uint64_t>> candidates;
    for (const auto& [id, m] : tasks) {
      if (!live.contains(id)) candidates.emplace_back(m.last_access_ms, id, m.content_length);
    }
    std::sort(candidates.begin(), candidates.end());
    std::vector<std::string> victims;
    std::uint64_t freed = 0;
    for (const auto& [when, id, length] : candidates) {
      if (!keep_going(freed)) break;
      victims.push_back(id);
      freed += length;
    }
    if (victims.empty()) return {};
    if (auto r = drop(victims, "evicted (least recently used)"); !r) {
      slog().error("GC could not evict {} task(s): {}", victims.size(), r.error().message);
      return {};
    }
    evictions += victims.size();
    return {victims.size(), freed};
  }

  eviction gc_pass(disk d, std::uint64_t incoming, bool force) {
    if (!force && !over(opts.gc_high, d, incoming, 0)) return {};
    auto e = evict_lru([&](std::uint64_t freed) { return over(opts.gc_low, d, incoming, freed); });
    if (e.count > 0) {
      slog().info("GC evicted {} task(s), {} (high watermark {}, low watermark {})", e.count,
                  format_bytes(e.bytes), describe(opts.gc_high), describe(opts.gc_low));
    }
    return e;
  }

  // Makes room for a new content file of `length` bytes: GC down to the low
  // watermark if the file would pass the high one, then, since the disk is
  // the hard limit, more LRU evictions if free space is still short.
  result<void> admit(const std::string& id, std::uint64_t length) {
    const disk d = measure();
    eviction e = gc_pass(d, length, false);
    if (d.total == 0) return ok();  // statvfs failed (logged): let fallocate decide
    const std::uint64_t reserve = std::min(kMaxReserve, d.total / 100);
    const std::uint64_t need = length + reserve;
    std::uint64_t avail = d.free + e.bytes;
    if (avail < need) {
      const auto more = evict_lru([&](std::uint64_t freed) { return avail + freed < need; });
      if (more.count > 0) {
        slog().info("evicted {} more task(s), {}, to fit task {} ({})", more.count,
                    format_bytes(more.bytes), id, format_bytes(length));
      }
      e.count += more.count;
      e.bytes += more.bytes;
      avail += more.bytes;
    }
    if (avail >= need) return ok();

    std::size_t pinned = 0;
    std::uint64_t pinned_bytes = 0;
    for (const auto& [pid, entry] : live) {
      if (auto it = tasks.find(pid); it != tasks.end()) {
        ++pinned;
        pinned_bytes += it->second.content_length;
      }
    }
    const std::string fs_name = opts.data_dir.string();
    std::string msg = "cache full: need " + format_bytes(length) + " (plus a " +
                      format_bytes(reserve) + " reserve) for task " + short_id(id) + ", " +
                      format_bytes(avail) + " free on " + fs_name + " after evicting " +
                      std::to_string(e.count) + " task(s)";
    if (pinned > 0) {
      msg += "; " + std::to_string(pinned) + " task(s) in use hold " + format_bytes(pinned_bytes) +
             " and cannot be evicted";
    }
    msg += " (free disk space on " + fs_name +
           (pinned > 0 ? ", wait for transfers in use to finish," : "") +
           " or move --data-dir to a larger filesystem)";
    slog().warn("{}", msg);
    return error(errc::no_space, std::move(msg));
  }

  void release(const std::string& id, const task_handle* raw) {
    const auto l = live.find(id);
    if (l == live.end() || l->second.raw != raw) return;
    live.erase(l);
    // The task was in use until now: that counts as an access for LRU.
    if (const auto it = tasks.find(id); it != tasks.end()) {
      it->second.last_access_ms = opts.now_ms();
      persist_access(it->second);
    }
  }

  std::shared_ptr<task_handle> live_handle(const std::string& id) const {
    const auto l = live.find(id);
    return l == live.end() ? nullptr : l->second.handle.lock();
  }

  // --- start-up -------------------------------------------------------------

  result<void> open_db() {
    rocksdb::Options o;
    o.create_if_missing = true;
    o.create_missing_column_families = true;
    o.keep_log_file_num = 4;
    o.max_log_file_size = 16 << 20;
    o.max_manifest_file_size = 64 << 20;
    o.max_total_wal_size = 64 << 20;
    // After a power cut the log replays up to the first torn record: what
    // survives is a prefix of our writes. The crash argument relies on it.
    o.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;

    // Open every column family on disk (a newer shoald may have added some).
    std::vector<std::string> names;
    if (!rocksdb::DB::ListColumnFamilies(o, meta_dir.string(), &names).ok()) names.clear();
    for (const char* want :
         {rocksdb::kDefaultColumnFamilyName.c_str(), "tasks", "pieces", "manifests"}) {
      if (std::find(names.begin(), names.end(), want) == names.end()) names.emplace_back(want);
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    descriptors.reserve(names.size());
    for (const auto& n : names) descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions(o));

    rocksdb::DB* raw = nullptr;
    const rocksdb::Status s = rocksdb::DB::Open(o, meta_dir.string(), descriptors, &cfs, &raw);
    if (!s.ok()) {
      const std::string text = s.ToString();
      if (s.IsIOError() &&
          (text.find("lock") != std::string::npos || text.find("LOCK") != std::string::npos)) {
        return error(errc::busy, "another shoald is using " + meta_dir.string() +
                                     " (stop it or use a different --data-dir): " + text);
      }
      if (s.IsCorruption()) {
        return error(errc::corrupt, "metadata database " + meta_dir.string() +
                                        " is corrupt: " + text +
                                        " (move it aside or empty --data-dir to start with an "
                                        "empty cache)");
      }
      return error(errc::io, "cannot open metadata database " + meta_dir.string() + ": " + text +
                                 " (check permissions and free space under --data-dir)");
    }
    db.reset(raw);
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i] == "tasks") tasks_cf = cfs[i];
      if (names[i] == "pieces") pieces_cf = cfs[i];
      if (names[i] == "manifests") manifests_cf = cfs[i];
    }
    return ok();
  }

  // Rebuilds the in-memory index from the tasks CF and makes records and
  // files agree: records without a sound file are dropped, files without a
  // record are deleted, piece records without a task record are deleted.
  result<void> recover() {
    std::vector<task_meta> loaded;
    rocksdb::WriteBatch drops;
    std::size_t dropped = 0;
    {
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), tasks_cf));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        const std::string_view key = view(it->key());
        auto m = is_task_id(key) ? decode_task(key, view(it->value())) : std::nullopt;
        if (!m) {
          slog().warn("dropping unreadable task record {} in {}", printable(key),
                      meta_dir.string());
          drop_records(drops, key);
          ++dropped;
          continue;
        }
        loaded.push_back(std::move(*m));
      }
      if (!it->status().ok()) {
        return error(errc::corrupt, "reading task records from " + meta_dir.string() + ": " +
                                        it->status().ToString() +
                                        " (move it aside or empty --data-dir to start with an "
                                        "empty cache)");
      }
    }

    std::vector<fs::path> unlink_after;
    for (auto& m : loaded) {
      const fs::path p = path_of(m.id);
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0) {
        if (errno != ENOENT) {
          return error(errc::io, "cannot stat " + p.string() + ": " + sys_error(errno) +
                                     " (check that the user running shoald owns --data-dir)");
        }
        slog().warn(
            "task {}: content file {} is missing; dropping its records (it will be "
            "fetched again)",
            m.id, p.string());
        drop_records(drops, m.id);
        ++dropped;
        continue;
      }
      if (!S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) != m.content_length) {
        slog().warn(
            "task {}: content file {} has {} bytes, expected {}; dropping it (it will be "
            "fetched again)",
            m.id, p.string(), st.st_size, m.content_length);
        drop_records(drops, m.id);
        unlink_after.push_back(p);
        ++dropped;
        continue;
      }
      if (m.complete && (st.st_mode & 0222) != 0 && ::chmod(p.c_str(), 0444) != 0) {
        slog().warn("task {}: cannot make {} read-only: {}", m.id, p.string(), sys_error(errno));
      }
      usage += m.content_length;
      const std::string id = m.id;
      tasks.emplace(id, std::move(m));
    }

    dropped += drop_orphan_pieces(drops);
    if (drops.Count() > 0) {
      if (auto r = write(drops, true, "recovering the cache"); !r) return r;
    }
    for (const auto& p : unlink_after) {
      if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
        slog().warn("cannot remove {}: {}", p.string(), sys_error(errno));
      }
    }
    const std::size_t orphans = remove_orphan_files();

    std::size_t complete = 0;
    for (const auto& [id, m] : tasks) complete += m.complete ? 1 : 0;
    slog().info(
        "opened cache {}: {} task(s) ({} complete, {} partial), {}; dropped {} record "
        "set(s), removed {} orphan file(s)",
        opts.data_dir.string(), tasks.size(), complete, tasks.size() - complete,
        format_bytes(usage), dropped, orphans);
    return ok();
  }

  // Piece records whose task has no record (normally impossible: task and
  // piece records are always dropped in one batch). Skips task by task.
  std::size_t drop_orphan_pieces(rocksdb::WriteBatch& drops) {
    std::size_t n = 0;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), pieces_cf));
    it->SeekToFirst();
    while (it->Valid()) {
      const std::string key = it->key().ToString();
      if (key.size() != kPieceKeyLength || key[kIdLength] != '/' ||
          !is_task_id(std::string_view(key).substr(0, kIdLength))) {
        slog().warn("dropping malformed piece record {}", printable(key));
        drops.Delete(pieces_cf, key);
        it->Next();
        continue;
      }
      const std::string id = key.substr(0, kIdLength);
      if (!tasks.contains(id)) {
        slog().warn("task {}: dropping piece records without a task record", id);
        drops.DeleteRange(pieces_cf, pieces_begin(id), pieces_end(id));
        ++n;
      }
      it->Seek(pieces_end(id));
    }
    if (!it->status().ok()) {
      slog().warn("scanning piece records in {}: {}", meta_dir.string(), it->status().ToString());
    }
    return n;
  }

  // Content files with no task record: left by a crash after the file was
  // created and before its record was written (or after a drop's records).
  std::size_t remove_orphan_files() {
    std::vector<fs::path> orphans;
    std::error_code ec;
    for (fs::directory_iterator top(content_dir, ec), end; !ec && top != end; top.increment(ec)) {
      const std::string name = top->path().filename().string();
      std::error_code kind_ec;
      if (name.size() != 2 || !is_lower_hex(name) || !top->is_directory(kind_ec)) {
        slog().warn("unexpected entry {} in {}; leaving it", top->path().string(),
                    content_dir.string());
        continue;
      }
      std::error_code sub_ec;
      for (fs::directory_iterator it(top->path(), sub_ec), sub_end; !sub_ec && it != sub_end;
           it.increment(sub_ec)) {
        const std::string file = it->path().filename().string();
        if (is_task_id(file) && file.compare(0, 2, name) == 0 && tasks.contains(file)) continue;
        if (it->is_directory(kind_ec)) {
          slog().warn("unexpected directory {}; leaving it", it->path().string());
          continue;
        }
        orphans.push_back(it->path());
      }
      if (sub_ec) slog().warn("cannot list {}: {}", top->path().string(), sub_ec.message());
    }
    if (ec) slog().warn("cannot list {}: {}", content_dir.string(), ec.message());

    std::size_t removed = 0;
    for (const auto& p : orphans) {
      if (::unlink(p.c_str()) == 0) {
        ++removed;
        slog().warn("removed orphan content file {} (no task record; left by a crash)", p.string());
      } else {
        slog().warn("cannot remove orphan content file {}: {}", p.string(), sys_error(errno));
      }
    }
    return removed;
  }
};

// ---------------------------------------------------------------------------
// store

store::store(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

store::~store() {
  // Handles may outlive the store: they keep their fd (reads, writes and
  // sync still work) but can no longer record anything.
  for (auto& [id, entry] : impl_->live) {
    if (auto h = entry.handle.lock()) h->store_ = nullptr;
  }
}

result<std::unique_ptr<store>> store::open(options opts) {
  if (opts.data_dir.empty()) {
    return error(errc::invalid_argument, "no cache directory given (set --data-dir)");
  }
  if (auto r = check_watermark(opts.gc_high, "--gc-high-watermark"); !r) return r.error();
  if (auto r = check_watermark(opts.gc_low, "--gc-low-watermark"); !r) return r.error();
  if (opts.gc_low.type == opts.gc_high.type && opts.gc_low.value > opts.gc_high.value) {
    return error(errc::invalid_argument,
                 "--gc-low-watermark " + describe(opts.gc_low) + " is above --gc-high-watermark " +
                     describe(opts.gc_high) + " (the low watermark must not exceed the high one)");
  }
  if (!opts.now_ms) {
    opts.now_ms = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
  }
  if (!opts.disk_space) {
    opts.disk_space = [dir = opts.data_dir]() -> std::pair<std::uint64_t, std::uint64_t> {
      struct statvfs st {};
      if (::statvfs(dir.c_str(), &st) != 0) {
        slog().warn("statvfs {}: {}; disk watermarks are not enforced", dir.string(),
                    sys_error(errno));
        return {0, 0};
      }
      return {static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize,
              static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize};
    };
  }

  auto d = std::make_unique<impl>();
  d->opts = std::move(opts);
  d->content_dir = d->opts.data_dir / "content";
  d->meta_dir = d->opts.data_dir / "meta";
  std::error_code ec;
  fs::create_directories(d->content_dir, ec);
  if (ec) {
    return error(errc::io, "cannot create " + d->content_dir.string() + ": " + ec.message() +
                               " (check that the user running shoald owns --data-dir)");
  }
  if (::access(d->content_dir.c_str(), W_OK | X_OK) != 0) {
    return error(errc::io, d->content_dir.string() + " is not writable: " + sys_error(errno) +
                               " (check that the user running shoald owns --data-dir)");
  }
  if (auto r = fsync_dir(d->opts.data_dir); !r) return r.error();
  if (auto r = d->open_db(); !r) return r.error();
  if (auto r = d->recover(); !r) return r.error();
  return std::unique_ptr<store>(new store(std::move(d)));
}

std::optional<task_meta> store::find(const std::string& task_id) const {
  const auto it = impl_->tasks.find(task_id);
  if (it == impl_->tasks.end()) return std::nullopt;
  return it->second;
}

result<std::shared_ptr<task_handle>> store::open_task(const std::string& task_id,
                                                      std::uint64_t content_length,
                                                      std::uint32_t piece_length) {
  impl& d = *impl_;
  if (!is_task_id(task_id)) {
    return error(errc::invalid_argument, "task id " + printable(task_id) +
                                             " is not 64 lowercase hex characters (derive it "
                                             "from the blob digest or URL)");
  }
  const auto count = count_pieces(content_length, piece_length);
  if (!count) {
    return error(errc::invalid_argument,
                 "task " + short_id(task_id) + ": piece length " + std::to_string(piece_length) +
                     " does not fit content length " + std::to_string(content_length) +
                     " (use a positive piece length, at most 2^32 pieces)");
  }
  const std::int64_t now = d.opts.now_ms();

  const auto matches = [&](const task_meta& m) {
    return m.content_length == content_length && (m.complete || m.piece_length == piece_length);
  };
  if (auto t = d.tasks.find(task_id); t != d.tasks.end()) {
    task_meta& known = t->second;
    if (known.complete && known.content_length != content_length) {
      return error(errc::invalid_argument,
                   "task " + short_id(task_id) + " is cached complete with " +
                       std::to_string(known.content_length) + " bytes, not " +
                       std::to_string(content_length) +
                       " (check the size the registry reports for this blob)");
    }
    if (auto h = d.live_handle(task_id)) {
      if (!matches(known)) {
        return error(errc::busy, "task " + short_id(task_id) + " is in use with content length " +
                                     std::to_string(known.content_length) + " and piece length " +
                                     std::to_string(known.piece_length) + ", not " +
                                     std::to_string(content_length) + " and " +
                                     std::to_string(piece_length) +
                                     " (retry when the transfer in use ends)");
      }
      known.last_access_ms = now;
      return h;
    }
    if (matches(known)) {
      file_problem problem = file_problem::none;
      auto fd = d.open_content(known, problem);
      if (fd) {
        known.last_access_ms = now;
        d.persist_access(known);
        auto [finished, digests] = d.load_pieces(known);
        std::shared_ptr<task_handle> h(new task_handle(
            this, known, std::move(finished), std::move(digests), *fd, d.path_of(task_id)));
        d.live[task_id] = {h, h.get()};
        return h;
      }
      if (problem == file_problem::none) return std::move(fd).error();
      slog().warn("task {}: {}; resetting the task", task_id, fd.error().message);
    } else {
      slog().warn(
          "task {}: cached partial with content length {} / piece length {}, requested "
          "{} / {}; resetting the task",
          task_id, known.content_length, known.piece_length, content_length, piece_length);
    }
    if (auto r = d.drop({task_id}, "reset"); !r) return r.error();
  }

  // A new task. Order: make room, create + preallocate + fsync the file, then
  // write its record (a crash in between leaves an orphan file, deleted at the
  // next start; never a record that describes bytes which are not there).
  if (auto r = d.admit(task_id, content_length); !r) return r.error();
  auto fd = d.create_file(task_id, content_length);
  if (!fd) return std::move(fd).error();
  task_meta m;
  m.id = task_id;
  m.content_length = content_length;
  m.piece_length = piece_length;
  m.piece_count = *count;
  m.complete = false;
  m.last_access_ms = now;
  rocksdb::WriteBatch b;
  // Clears any piece record that might predate this file, atomically with the record.
  b.DeleteRange(d.pieces_cf, pieces_begin(task_id), pieces_end(task_id));
  b.Put(d.tasks_cf, task_id, encode_task(m));
  if (auto r = d.write(b, false, "recording new task " + short_id(task_id)); !r) {
    ::close(*fd);
    ::unlink(d.path_of(task_id).c_str());
    return r.error();
  }
  d.tasks[task_id] = m;
  d.usage += content_length;
  slog().info("task {}: created {} ({} pieces of {})", task_id, d.path_of(task_id).string(),
              m.piece_count, format_bytes(piece_length));
  std::shared_ptr<task_handle> h(new task_handle(this, m, std::vector<bool>(m.piece_count, false),
                                                 std::vector<std::string>(m.piece_count), *fd,
                                                 d.path_of(task_id)));
  d.live[task_id] = {h, h.get()};
  return h;
}

result<std::shared_ptr<task_handle>> store::open_existing(const std::string& task_id) {
  impl& d = *impl_;
  const auto t = d.tasks.find(task_id);
  if (t == d.tasks.end()) {
    return error(errc::not_found, "task " + short_id(task_id) + " is not in the cache");
  }
  task_meta& known = t->second;
  const std::int64_t now = d.opts.now_ms();
  if (auto h = d.live_handle(task_id)) {
    known.last_access_ms = now;
    return h;
  }
  file_problem problem = file_problem::none;
  auto fd = d.open_content(known, problem);
  if (!fd) {
    if (problem == file_problem::none) return std::move(fd).error();
    std::string msg = fd.error().message;
    slog().warn("task {}: {}; dropping the task", task_id, msg);
    if (auto r = d.drop({task_id}, "dropped (content file missing or damaged)"); !r) {
      slog().error("{}", r.error().message);
    }
    return error(errc::not_found, msg + "; dropped it from the cache (fetch it again)");
  }
  known.last_access_ms = now;
  d.persist_access(known);
  auto [finished, digests] = d.load_pieces(known);
  std::shared_ptr<task_handle> h(new task_handle(this, known, std::move(finished),
                                                 std::move(digests), *fd, d.path_of(task_id)));
  d.live[task_id] = {h, h.get()};
  return h;
}

std::vector<task_meta> store::list() const {
  std::vector<task_meta> out;
  out.reserve(impl_->tasks.size());
  for (const auto& [id, m] : impl_->tasks) out.push_back(m);
  std::sort(out.begin(), out.end(),
            [](const task_meta& a, const task_meta& b) { return a.id < b.id; });
  return out;
}

result<void> store::remove(const std::string& task_id) {
  impl& d = *impl_;
  if (!d.tasks.contains(task_id)) {
    return error(errc::not_found, "task " + short_id(task_id) + " is not in the cache");
  }
  if (d.live_handle(task_id)) {
    return error(errc::busy, "task " + short_id(task_id) +
                                 " is in use by a download, upload or reader (retry when it "
                                 "finishes)");
  }
  return d.drop({task_id}, "removed");
}

result<void> store::put_manifest(const std::string& digest_hex, const manifest_record& m) {
  if (!is_lower_hex(digest_hex) || digest_hex.size() > 128) {
    return error(errc::invalid_argument, "manifest digest " + printable(digest_hex) +
                                             " is not lowercase hex (pass the digest without "
                                             "its algorithm prefix)");
  }
  rocksdb::WriteBatch b;
  b.Put(impl_->manifests_cf, digest_hex, encode_manifest(m));
  return impl_->write(b, false, "caching manifest " + short_id(digest_hex));
}

std::optional<manifest_record> store::get_manifest(const std::string& digest_hex) const {
  std::string value;
  const auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->manifests_cf, digest_hex, &value);
  if (s.IsNotFound()) return std::nullopt;
  if (!s.ok()) {
    slog().warn("reading manifest {} from {}: {}", digest_hex, impl_->meta_dir.string(),
                s.ToString());
    return std::nullopt;
  }
  auto m = decode_manifest(value);
  if (!m) slog().warn("manifest record {} is unreadable; ignoring it", digest_hex);
  return m;
}

std::uint64_t store::disk_usage() const { return impl_->usage; }

std::size_t store::gc(bool force) { return impl_->gc_pass(impl_->measure(), 0, force).count; }

std::uint64_t store::evictions_total() const { return impl_->evictions; }

// ---------------------------------------------------------------------------
// task_handle

task_handle::task_handle(store* s, task_meta meta, std::vector<bool> finished,
                         std::vector<std::string> digests, int fd, std::filesystem::path path)
    : store_(s),
      meta_(std::move(meta)),
      finished_(std::move(finished)),
      digests_(std::move(digests)),
      fd_(fd),
      path_(std::move(path)) {}

task_handle::~task_handle() {
  if (fd_ >= 0) ::close(fd_);
  if (store_ != nullptr) store_->impl_->release(meta_.id, this);
}

std::uint32_t task_handle::finished_count() const {
  return static_cast<std::uint32_t>(std::count(finished_.begin(), finished_.end(), true));
}

std::string task_handle::piece_digest(std::uint32_t n) const {
  return n < digests_.size() ? digests_[n] : std::string();
}

namespace {
error discarded(const task_meta& m) {
  return error(errc::not_found,
               "task " + short_id(m.id) + " was discarded (open it again to start over)");
}
error closed(const task_meta& m) {
  return error(errc::cancelled,
               "the cache holding task " + short_id(m.id) + " is closed (shoald is shutting down)");
}
}  // namespace

result<void> task_handle::write(std::uint64_t offset, std::span<const char> data) {
  if (fd_ < 0) return discarded(meta_);
  if (meta_.complete) {
    return error(errc::invalid_argument, "task " + short_id(meta_.id) +
                                             " is complete and immutable (its content file " +
                                             path_.string() + " is read-only)");
  }
  if (offset > meta_.content_length || data.size() > meta_.content_length - offset) {
    return error(errc::invalid_argument,
                 "write of " + std::to_string(data.size()) + " bytes at offset " +
                     std::to_string(offset) + " is past the end of task " + short_id(meta_.id) +
                     " (content length " + std::to_string(meta_.content_length) + ")");
  }
  const char* p = data.data();
  std::size_t left = data.size();
  std::uint64_t off = offset;
  while (left > 0) {
    const ssize_t n = ::pwrite(fd_, p, left, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : EIO;
      const bool full = e == ENOSPC || e == EDQUOT;
      return error(full ? errc::no_space : errc::io,
                   "writing " + std::to_string(left) + " bytes at offset " + std::to_string(off) +
                       " of " + path_.string() + ": " + sys_error(e) +
                       (full ? " (free disk space under --data-dir)"
                             : " (check the disk under --data-dir)"));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
    off += static_cast<std::uint64_t>(n);
  }
  return ok();
}

result<void> task_handle::sync() {
  if (fd_ < 0) return discarded(meta_);
  int rc = 0;
  do {
    rc = ::fdatasync(fd_);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    return error(errc::io, "fdatasync " + path_.string() + ": " + sys_error(errno) +
                               " (the disk under --data-dir may be failing; pieces written since "
                               "the last sync are not durable)");
  }
  return ok();
}

result<void> task_handle::mark_piece_finished(std::uint32_t n, const std::string& sha256_hex) {
  if (fd_ < 0) return discarded(meta_);
  if (store_ == nullptr) return closed(meta_);
  if (n >= meta_.piece_count) {
    return error(errc::invalid_argument, "piece " + std::to_string(n) +
                                             " is out of range for task " + short_id(meta_.id) +
                                             " (" + std::to_string(meta_.piece_count) + " pieces)");
  }
  if (!sha256_hex.empty() && !is_task_id(sha256_hex)) {
    return error(errc::invalid_argument,
                 "piece " + std::to_string(n) + " of task " + short_id(meta_.id) + ": digest " +
                     printable(sha256_hex) + " is not 64 lowercase hex characters");
  }
  if (meta_.complete) return ok();  // every piece of a complete task is finished already
  auto& d = *store_->impl_;
  rocksdb::WriteBatch b;
  b.Put(d.pieces_cf, piece_key(meta_.id, n), sha256_hex);
  // Not synced: if a power cut loses it, the piece is simply fetched again.
  if (auto r = d.write(b, false,
                       "recording piece " + std::to_string(n) + " of task " + short_id(meta_.id));
      !r) {
    return r;
  }
  finished_[n] = true;
  digests_[n] = sha256_hex;
  return ok();
}

result<std::size_t> task_handle::read(std::uint64_t offset, std::span<char> out) const {
  if (fd_ < 0) return discarded(meta_);
  if (offset >= meta_.content_length) return std::size_t{0};
  const std::size_t want =
      static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), meta_.content_length - offset));
  std::size_t done = 0;
  while (done < want) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, want - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return error(errc::io, "reading " + std::to_string(want - done) + " bytes at offset " +
                                 std::to_string(offset + done) + " of " + path_.string() + ": " +
                                 sys_error(errno) + " (check the disk under --data-dir)");
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

result<void> task_handle::mark_complete() {
  if (fd_ < 0) return discarded(meta_);
  if (store_ == nullptr) return closed(meta_);
  if (meta_.complete) return ok();
  const std::uint32_t done = finished_count();
  if (done != meta_.piece_count) {
    return error(errc::invalid_argument,
                 "task " + short_id(meta_.id) + " has " + std::to_string(done) + " of " +
                     std::to_string(meta_.piece_count) +
                     " pieces finished (finish and verify every piece before marking it "
                     "complete)");
  }
  auto& d = *store_->impl_;
  // Data first, then the mode, then the record: a "complete" record never
  // describes bytes that are not durable or a file that is still writable
  // (open re-applies the mode that matches the record after a crash).
  if (auto r = sync(); !r) return r;
  if (::fchmod(fd_, 0444) != 0) {
    return error(errc::io, "cannot make " + path_.string() + " read-only: " + sys_error(errno) +
                               " (check that the user running shoald owns --data-dir)");
  }
  task_meta m = meta_;
  m.complete = true;
  if (const auto it = d.tasks.find(m.id); it != d.tasks.end()) {
    m.last_access_ms = it->second.last_access_ms;
  }
  rocksdb::WriteBatch b;
  b.Put(d.tasks_cf, m.id, encode_task(m));
  // Synced: a complete task may be hard-linked into model directories and
  // announced as a seed; that claim must survive a power cut.
  if (auto r = d.write(b, true, "marking task " + short_id(m.id) + " complete"); !r) {
    ::fchmod(fd_, 0644);
    return r;
  }
  meta_.complete = true;
  if (const auto it = d.tasks.find(m.id); it != d.tasks.end()) it->second.complete = true;
  // Swap in a read-only descriptor under the same number: dup3 is atomic, so
  // a sync() running on another thread sees either file description.
  const int ro = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (ro < 0 || ::dup3(ro, fd_, O_CLOEXEC) < 0) {
    slog().warn("task {}: cannot reopen {} read-only: {}", m.id, path_.string(), sys_error(errno));
  }
  if (ro >= 0) ::close(ro);
  slog().info("task {}: complete ({})", m.id, format_bytes(m.content_length));
  return ok();
}

result<void> task_handle::discard() {
  if (fd_ < 0) return ok();
  if (store_ == nullptr) return closed(meta_);
  auto& d = *store_->impl_;
  if (const auto l = d.live.find(meta_.id); l != d.live.end() && l->second.raw == this) {
    d.live.erase(l);
  }
  ::close(fd_);
  fd_ = -1;
  store_ = nullptr;
  meta_.complete = false;
  finished_.assign(finished_.size(), false);
  digests_.assign(digests_.size(), std::string());
  return d.drop({meta_.id}, "discarded");
}

}  // namespace shoal::storage
