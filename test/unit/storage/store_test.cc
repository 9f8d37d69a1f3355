// Hermetic tests of the piece cache: temp dirs under /tmp, injected clock and
// injected filesystem size; a "restart" destroys the store and opens it again.

#include "daemon/storage/store.h"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using shoal::errc;
using namespace shoal::storage;

constexpr std::uint64_t kMiB = 1ull << 20;

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string t = "/tmp/shoal-storage-test-XXXXXX";
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

// A fake filesystem of `total` bytes on which `other_used` bytes belong to
// something else; the cache's own files count through disk_usage().
struct fixture {
  temp_dir dir;
  std::int64_t now = 1000;
  std::uint64_t total = 1ull << 30;
  std::uint64_t other_used = 0;
  watermark high{watermark::kind::percent_of_disk, 90};
  watermark low{watermark::kind::percent_of_disk, 80};
  store* current = nullptr;

  fs::path data_dir() const { return dir.path / "data"; }

  options opts() {
    options o;
    o.data_dir = data_dir();
    o.gc_high = high;
    o.gc_low = low;
    o.now_ms = [this] { return now; };
    o.disk_space = [this] {
      const std::uint64_t used = other_used + (current ? current->disk_usage() : 0);
      return std::pair<std::uint64_t, std::uint64_t>{total, used >= total ? 0 : total - used};
    };
    return o;
  }

  std::unique_ptr<store> open() {
    auto s = store::open(opts());
    if (!s) FAIL(s.error().describe());
    current = s->get();
    return std::move(s).value();
  }

  void close(std::unique_ptr<store>& s) {
    s.reset();
    current = nullptr;
  }
};

// 64 lowercase hex; the first two characters vary so files spread over dirs.
std::string task_id(int n) {
  char prefix[3];
  std::snprintf(prefix, sizeof prefix, "%02x", n & 0xff);
  return prefix + std::string(62, "0123456789abcdef"[n % 16]);
}

std::string digest(int n) { return std::string(64, "fedcba9876543210"[n % 16]); }

std::string pattern(std::size_t n, int seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>((i * 131 + static_cast<std::size_t>(seed) * 7 + i / 251) & 0xff);
  return s;
}

std::span<const char> as_span(const std::string& s) { return {s.data(), s.size()}; }

std::string read_all(task_handle& h) {
  std::string out(h.meta().content_length, '\0');
  auto n = h.read(0, {out.data(), out.size()});
  REQUIRE(n.has_value());
  out.resize(*n);
  return out;
}

// Writes, syncs and records piece n as finished (the transfer module's order).
void finish_piece(task_handle& h, std::uint32_t n, const std::string& content) {
  const std::uint64_t off = std::uint64_t{n} * h.meta().piece_length;
  const std::uint64_t len =
      std::min<std::uint64_t>(h.meta().piece_length, h.meta().content_length - off);
  REQUIRE(h.write(off, {content.data() + off, len}).has_value());
  REQUIRE(h.sync().has_value());
  REQUIRE(h.mark_piece_finished(n, digest(static_cast<int>(n))).has_value());
}

// The handle, or a test failure that shows the store's message.
std::shared_ptr<task_handle> must(shoal::result<std::shared_ptr<task_handle>> r) {
  if (!r) FAIL(r.error().describe());
  return std::move(r).value();
}

int access_mode(int fd) { return ::fcntl(fd, F_GETFL) & O_ACCMODE; }

unsigned file_mode(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("store: written bytes read back; the file is preallocated") {
  fixture f;
  auto s = f.open();
  const std::string id = task_id(0xa1);
  auto h = s->open_task(id, 2500, 1024);
  REQUIRE(h.has_value());
  task_handle& t = **h;

  CHECK(t.meta().piece_count == 3);
  CHECK_FALSE(t.complete());
  CHECK(t.finished_count() == 0);
  CHECK(t.path() == f.data_dir() / "content" / "a1" / id);
  CHECK(fs::file_size(t.path()) == 2500);
  CHECK(access_mode(t.fd()) == O_RDWR);
  CHECK(s->disk_usage() == 2500);

  const std::string data = pattern(2500, 1);
  // Out of order, as pieces arrive from different parents.
  REQUIRE(t.write(2048, {data.data() + 2048, 452}).has_value());
  REQUIRE(t.write(0, {data.data(), 1024}).has_value());
  REQUIRE(t.write(1024, {data.data() + 1024, 1024}).has_value());
  REQUIRE(t.sync().has_value());
  CHECK(read_all(t) == data);

  std::string tail(1000, '\0');
  auto n = t.read(2000, {tail.data(), tail.size()});
  REQUIRE(n.has_value());
  CHECK(*n == 500);
  CHECK(tail.substr(0, 500) == data.substr(2000));

  auto past = t.write(2400, as_span(std::string(200, 'x')));
  REQUIRE_FALSE(past.has_value());
  CHECK(past.error().is(errc::invalid_argument));
  CHECK_THAT(past.error().message, Catch::Contains("past the end"));

  auto found = s->find(id);
  REQUIRE(found.has_value());
  CHECK(found->content_length == 2500);
  CHECK(s->list().size() == 1);
}

TEST_CASE("store: finished pieces survive a restart, unrecorded pieces do not") {
  fixture f;
  const std::string id = task_id(0x3c);
  const std::string data = pattern(2500, 2);
  {
    auto s = f.open();
    auto h = s->open_task(id, 2500, 1024);
    REQUIRE(h.has_value());
    finish_piece(**h, 0, data);
    finish_piece(**h, 2, data);
    // Piece 1 is written and synced but never recorded finished (crash before the record).
    REQUIRE((*h)->write(1024, {data.data() + 1024, 1024}).has_value());
    REQUIRE((*h)->sync().has_value());
    CHECK((*h)->finished_count() == 2);
  }
  auto s = f.open();
  auto meta = s->find(id);
  REQUIRE(meta.has_value());
  CHECK_FALSE(meta->complete);
  CHECK(meta->piece_count == 3);

  {
    auto h = must(s->open_existing(id));
    CHECK(h->finished() == std::vector<bool>{true, false, true});
    CHECK(h->piece_digest(0) == digest(0));
    CHECK(h->piece_digest(1).empty());
    CHECK(h->piece_digest(2) == digest(2));
    CHECK(read_all(*h).substr(0, 1024) == data.substr(0, 1024));
  }
  // open_task on the existing partial task keeps its pieces as well.
  auto again = must(s->open_task(id, 2500, 1024));
  CHECK(again->finished() == std::vector<bool>{true, false, true});
}

TEST_CASE("store: mark_complete needs every piece, then the file is read-only") {
  fixture f;
  const std::string id = task_id(0x42);
  const std::string data = pattern(2048, 3);
  {
    auto s = f.open();
    auto h = s->open_task(id, 2048, 1024);
    REQUIRE(h.has_value());
    task_handle& t = **h;
    finish_piece(t, 0, data);

    auto early = t.mark_complete();
    REQUIRE_FALSE(early.has_value());
    CHECK(early.error().is(errc::invalid_argument));
    CHECK_THAT(early.error().message, Catch::Contains("1 of 2 pieces"));

    finish_piece(t, 1, data);
    REQUIRE(t.mark_complete().has_value());
    CHECK(t.complete());
    CHECK(file_mode(t.path()) == 0444);
    CHECK(access_mode(t.fd()) == O_RDONLY);
    CHECK(s->find(id)->complete);

    auto w = t.write(0, as_span(std::string(10, 'x')));
    REQUIRE_FALSE(w.has_value());
    CHECK(w.error().is(errc::invalid_argument));
    CHECK_THAT(w.error().message, Catch::Contains("is complete and immutable"));
    CHECK(read_all(t) == data);
  }
  auto s = f.open();
  auto meta = s->find(id);
  REQUIRE(meta.has_value());
  CHECK(meta->complete);
  auto h = s->open_existing(id);
  REQUIRE(h.has_value());
  CHECK((*h)->complete());
  CHECK((*h)->finished_count() == 2);
  CHECK((*h)->piece_digest(1) == digest(1));
  CHECK(access_mode((*h)->fd()) == O_RDONLY);
  CHECK(file_mode((*h)->path()) == 0444);
  CHECK(read_all(**h) == data);
  CHECK_FALSE((*h)->write(0, as_span(std::string(1, 'x'))).has_value());
}

TEST_CASE("store: discard removes the file and every record") {
  fixture f;
  const std::string id = task_id(0x77);
  const std::string data = pattern(3000, 4);
  fs::path path;
  {
    auto s = f.open();
    auto h = s->open_task(id, 3000, 1024);
    REQUIRE(h.has_value());
    finish_piece(**h, 0, data);
    path = (*h)->path();
    REQUIRE(fs::exists(path));

    REQUIRE((*h)->discard().has_value());
    CHECK_FALSE(fs::exists(path));
    CHECK_FALSE(s->find(id).has_value());
    CHECK(s->disk_usage() == 0);
    CHECK((*h)->finished_count() == 0);
    CHECK_FALSE((*h)->write(0, as_span(data.substr(0, 10))).has_value());
    std::string buf(10, '\0');
    CHECK_FALSE((*h)->read(0, {buf.data(), buf.size()}).has_value());
    // A new task with the same id starts empty while the old handle is still alive.
    auto fresh = s->open_task(id, 3000, 1024);
    REQUIRE(fresh.has_value());
    CHECK(fresh->get() != h->get());
    CHECK((*fresh)->finished_count() == 0);
    REQUIRE((*fresh)->discard().has_value());
  }
  auto s = f.open();
  CHECK_FALSE(s->find(id).has_value());
  CHECK_FALSE(fs::exists(path));
  auto h = s->open_task(id, 3000, 1024);
  REQUIRE(h.has_value());
  CHECK((*h)->finished_count() == 0);
  CHECK((*h)->piece_digest(0).empty());
}

TEST_CASE("store: GC evicts least recently used tasks first") {
  fixture f;
  f.high = {watermark::kind::bytes, 3000};
  f.low = {watermark::kind::bytes, 2000};
  auto s = f.open();
  const std::string a = task_id(1), b = task_id(2), c = task_id(3), d = task_id(4), e = task_id(5);
  const auto create = [&](const std::string& id, std::int64_t at) {
    f.now = at;
    auto h = s->open_task(id, 1000, 1000);
    REQUIRE(h.has_value());
  };
  create(a, 1);
  create(b, 2);
  create(c, 3);
  f.now = 4;
  REQUIRE(s->open_existing(a).has_value());  // a is now the most recently used
  const fs::path b_path = f.data_dir() / "content" / "02" / b;
  REQUIRE(fs::exists(b_path));

  CHECK(s->gc() == 0);      // 3000 bytes is not above the 3000-byte high watermark
  CHECK(s->gc(true) == 1);  // forced: down to 2000 bytes, oldest first
  CHECK_FALSE(s->find(b).has_value());
  CHECK_FALSE(fs::exists(b_path));
  CHECK(s->find(a).has_value());
  CHECK(s->find(c).has_value());

  create(d, 5);  // 3000 bytes with d: not above the high watermark, nothing evicted
  CHECK(s->evictions_total() == 1);
  create(e, 6);  // would make 4000: evict c (t=3) and a (t=4) to get to 2000
  CHECK_FALSE(s->find(c).has_value());
  CHECK_FALSE(s->find(a).has_value());
  CHECK(s->find(d).has_value());
  CHECK(s->find(e).has_value());
  CHECK(s->evictions_total() == 3);
  CHECK(s->disk_usage() == 2000);
}

TEST_CASE("store: LRU times survive a restart") {
  fixture f;
  f.high = {watermark::kind::bytes, 2000};
  f.low = {watermark::kind::bytes, 1000};
  const std::string a = task_id(1), b = task_id(2);
  {
    auto s = f.open();
    f.now = 10;
    REQUIRE(s->open_task(a, 1000, 1000).has_value());
    f.now = 20;
    REQUIRE(s->open_task(b, 1000, 1000).has_value());
    f.now = 30;
    REQUIRE(s->open_existing(a).has_value());
  }
  auto s = f.open();
  CHECK(s->find(a)->last_access_ms == 30);
  CHECK(s->gc(true) == 1);
  CHECK(s->find(a).has_value());
  CHECK_FALSE(s->find(b).has_value());
}

TEST_CASE("store: a task in use is never evicted or removed") {
  fixture f;
  f.high = {watermark::kind::bytes, 1500};
  f.low = {watermark::kind::bytes, 1000};
  auto s = f.open();
  const std::string a = task_id(1), b = task_id(2);
  f.now = 1;
  auto pinned = must(s->open_task(a, 1000, 1000));
  f.now = 2;
  must(s->open_task(b, 1000, 1000));  // over the high watermark, but a is pinned
  CHECK(s->find(a).has_value());

  CHECK(s->gc(true) == 1);  // b goes even though a is older
  CHECK(s->find(a).has_value());
  CHECK_FALSE(s->find(b).has_value());

  auto busy = s->remove(a);
  REQUIRE_FALSE(busy.has_value());
  CHECK(busy.error().is(errc::busy));
  CHECK_THAT(busy.error().message, Catch::Contains("in use"));

  // Opening a task in use hands out the same handle; it stays pinned until the last one goes.
  auto again = must(s->open_existing(a));
  CHECK(again.get() == pinned.get());
  pinned.reset();
  CHECK(s->gc(true) == 0);
  CHECK(s->find(a).has_value());
  again.reset();

  REQUIRE(s->remove(a).has_value());
  CHECK_FALSE(s->find(a).has_value());
  auto gone = s->remove(a);
  REQUIRE_FALSE(gone.has_value());
  CHECK(gone.error().is(errc::not_found));
}

TEST_CASE("store: open_task evicts to make room, then refuses with no_space") {
  fixture f;
  f.total = 100 * kMiB;  // reserve: 1% = 1 MiB
  f.other_used = 90 * kMiB;
  auto s = f.open();
  const std::string pinned_id = task_id(0x10), old_id = task_id(0x20), new_id = task_id(0x30),
                    big_id = task_id(0x40);

  f.now = 1;
  REQUIRE(s->open_task(old_id, 3 * kMiB, 1 * kMiB).has_value());
  f.now = 2;
  auto pinned = s->open_task(pinned_id, 4 * kMiB, 1 * kMiB);
  REQUIRE(pinned.has_value());

  // 3 MiB free; 5 MiB + reserve fits only after evicting the unpinned task.
  f.now = 3;
  auto fits = s->open_task(new_id, 5 * kMiB, 1 * kMiB);
  REQUIRE(fits.has_value());
  CHECK_FALSE(s->find(old_id).has_value());
  CHECK(s->evictions_total() == 1);

  // 1 MiB free, everything else in use.
  f.now = 4;
  auto full = s->open_task(big_id, 8 * kMiB, 1 * kMiB);
  REQUIRE_FALSE(full.has_value());
  CHECK(full.error().is(errc::no_space));
  const std::string& msg = full.error().message;
  CHECK_THAT(msg, Catch::StartsWith("cache full: need 8 MiB"));
  CHECK_THAT(msg, Catch::Contains(big_id.substr(0, 12)));
  CHECK_THAT(msg, Catch::Contains("1 MiB free on " + f.data_dir().string()));
  CHECK_THAT(msg, Catch::Contains("2 task(s) in use"));
  CHECK_THAT(msg, Catch::Contains("free disk space"));
  CHECK_FALSE(s->find(big_id).has_value());
  CHECK_FALSE(fs::exists(f.data_dir() / "content" / "40" / big_id));
  CHECK(s->find(pinned_id).has_value());
  CHECK(s->find(new_id).has_value());
}

TEST_CASE("store: start-up drops records without files and deletes files without records") {
  fixture f;
  const std::string kept = task_id(0x11), lost = task_id(0x22), torn = task_id(0x33),
                    orphan = task_id(0x44);
  {
    auto s = f.open();
    for (const auto& id : {kept, lost, torn}) REQUIRE(s->open_task(id, 4096, 1024).has_value());
  }
  const fs::path content = f.data_dir() / "content";
  fs::remove(content / "22" / lost);
  fs::resize_file(content / "33" / torn, 100);
  // A crash after creating a file and before recording its task.
  fs::create_directories(content / "44");
  std::ofstream(content / "44" / orphan) << "partial";
  std::ofstream(content / "44" / "not-a-task-id") << "junk";

  auto s = f.open();
  CHECK(s->find(kept).has_value());
  CHECK_FALSE(s->find(lost).has_value());
  CHECK_FALSE(s->find(torn).has_value());
  CHECK_FALSE(s->find(orphan).has_value());
  CHECK(fs::exists(content / "11" / kept));
  CHECK_FALSE(fs::exists(content / "33" / torn));
  CHECK_FALSE(fs::exists(content / "44" / orphan));
  CHECK_FALSE(fs::exists(content / "44" / "not-a-task-id"));
  CHECK(s->disk_usage() == 4096);
  CHECK(s->list().size() == 1);
}

TEST_CASE("store: piece records are not trusted without their task record") {
  fixture f;
  const std::string id = task_id(0x5e);
  const std::string data = pattern(2048, 5);
  {
    auto s = f.open();
    auto h = s->open_task(id, 2048, 1024);
    REQUIRE(h.has_value());
    finish_piece(**h, 0, data);
    finish_piece(**h, 1, data);
  }
  {
    // Lose the task record but keep the piece records and the file.
    rocksdb::DB* raw = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> cfs;
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const char* n : {"default", "tasks", "pieces", "manifests"})
      descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    REQUIRE(
        rocksdb::DB::Open(rocksdb::DBOptions(), (f.data_dir() / "meta").string(), descs, &cfs, &raw)
            .ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    REQUIRE(db->Delete(rocksdb::WriteOptions(), cfs[1], id).ok());
    for (auto* h : cfs) REQUIRE(db->DestroyColumnFamilyHandle(h).ok());
    REQUIRE(db->Close().ok());
  }
  auto s = f.open();
  CHECK_FALSE(s->find(id).has_value());
  CHECK_FALSE(fs::exists(f.data_dir() / "content" / "5e" / id));
  auto h = s->open_task(id, 2048, 1024);
  REQUIRE(h.has_value());
  CHECK((*h)->finished_count() == 0);
}

TEST_CASE("store: open_task resets a partial task whose file went wrong") {
  fixture f;
  auto s = f.open();
  const std::string id = task_id(0x61);
  const std::string data = pattern(4096, 6);
  fs::path path;
  {
    auto h = s->open_task(id, 4096, 1024);
    REQUIRE(h.has_value());
    finish_piece(**h, 0, data);
    path = (*h)->path();
  }
  fs::resize_file(path, 10);
  {
    auto h = must(s->open_task(id, 4096, 1024));
    CHECK(h->finished_count() == 0);
    CHECK(fs::file_size(path) == 4096);
    finish_piece(*h, 1, data);
  }
  {
    // A different length for a partial task also starts it over.
    auto h = must(s->open_task(id, 5000, 1024));
    CHECK(h->meta().content_length == 5000);
    CHECK(h->meta().piece_count == 5);
    CHECK(h->finished_count() == 0);
    CHECK(fs::file_size(path) == 5000);
  }

  // open_existing on a task whose file vanished reports not_found and forgets it.
  fs::remove(path);
  auto missing = s->open_existing(id);
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().is(errc::not_found));
  CHECK_THAT(missing.error().message, Catch::Contains(path.string()));
  CHECK_FALSE(s->find(id).has_value());
}

TEST_CASE("store: a complete task keeps its length; a partial read-only file is repaired") {
  fixture f;
  auto s = f.open();
  const std::string id = task_id(0x71);
  const std::string data = pattern(1024, 7);
  {
    auto h = s->open_task(id, 1024, 1024);
    REQUIRE(h.has_value());
    finish_piece(**h, 0, data);
    REQUIRE((*h)->mark_complete().has_value());
  }
  auto wrong = s->open_task(id, 999, 1024);
  REQUIRE_FALSE(wrong.has_value());
  CHECK(wrong.error().is(errc::invalid_argument));
  {
    auto same = must(s->open_task(id, 1024, 512));  // a complete task keeps its piece length
    CHECK(same->complete());
    CHECK(same->meta().piece_length == 1024);
  }

  // Crash between mark_complete's chmod and its record: a partial task with a 0444 file.
  const std::string partial = task_id(0x73);
  fs::path path;
  {
    auto h = s->open_task(partial, 2048, 1024);
    REQUIRE(h.has_value());
    path = (*h)->path();
  }
  REQUIRE(::chmod(path.c_str(), 0444) == 0);
  auto h = s->open_task(partial, 2048, 1024);
  REQUIRE(h.has_value());
  CHECK((file_mode(path) & 0200) != 0);
  CHECK((*h)->write(0, as_span(data)).has_value());
}

TEST_CASE("store: manifests round trip and survive a restart") {
  fixture f;
  const std::string d = digest(3);
  const manifest_record m{"application/vnd.oci.image.manifest.v1+json",
                          std::string("{\"schemaVersion\":2}\0tail", 24)};
  {
    auto s = f.open();
    REQUIRE(s->put_manifest(d, m).has_value());
    auto got = s->get_manifest(d);
    REQUIRE(got.has_value());
    CHECK(got->media_type == m.media_type);
    CHECK(got->body == m.body);
    CHECK_FALSE(s->get_manifest(digest(4)).has_value());

    auto bad = s->put_manifest("sha256:" + d, m);
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().is(errc::invalid_argument));
  }
  auto s = f.open();
  auto got = s->get_manifest(d);
  REQUIRE(got.has_value());
  CHECK(got->media_type == m.media_type);
  CHECK(got->body == m.body);
}

TEST_CASE("store: a second store on the same data dir is refused") {
  fixture f;
  auto s = f.open();
  auto second = store::open(f.opts());
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().is(errc::busy));
  CHECK_THAT(second.error().message, Catch::Contains("another shoald is using"));
  CHECK_THAT(second.error().message, Catch::Contains((f.data_dir() / "meta").string()));
  CHECK_THAT(second.error().message, Catch::Contains("--data-dir"));
}

TEST_CASE("store: options are checked at open") {
  fixture f;
  f.high = {watermark::kind::percent_of_disk, 80};
  f.low = {watermark::kind::percent_of_disk, 90};
  auto s = store::open(f.opts());
  REQUIRE_FALSE(s.has_value());
  CHECK(s.error().is(errc::invalid_argument));
  CHECK_THAT(s.error().message, Catch::Contains("--gc-low-watermark 90%"));

  options none;
  auto empty = store::open(none);
  REQUIRE_FALSE(empty.has_value());
  CHECK_THAT(empty.error().message, Catch::Contains("--data-dir"));
}

TEST_CASE("store: bad task arguments are refused") {
  fixture f;
  auto s = f.open();
  auto bad_id = s->open_task("../../etc/passwd", 10, 10);
  REQUIRE_FALSE(bad_id.has_value());
  CHECK(bad_id.error().is(errc::invalid_argument));
  auto zero_piece = s->open_task(task_id(1), 10, 0);
  REQUIRE_FALSE(zero_piece.has_value());
  CHECK(zero_piece.error().is(errc::invalid_argument));

  auto h = s->open_task(task_id(2), 2048, 1024);
  REQUIRE(h.has_value());
  CHECK_FALSE((*h)->mark_piece_finished(2, digest(1)).has_value());
  CHECK_FALSE((*h)->mark_piece_finished(0, "not-a-digest").has_value());
  auto conflict = s->open_task(task_id(2), 4096, 1024);  // in use with another length
  REQUIRE_FALSE(conflict.has_value());
  CHECK(conflict.error().is(errc::busy));

  // An empty blob has no pieces and is complete at once.
  auto empty = s->open_task(task_id(3), 0, 1024);
  REQUIRE(empty.has_value());
  CHECK((*empty)->meta().piece_count == 0);
  REQUIRE((*empty)->mark_complete().has_value());
  CHECK(s->find(task_id(3))->complete);
}

TEST_CASE("store: handles outlive the store") {
  fixture f;
  auto s = f.open();
  const std::string data = pattern(1024, 8);
  auto h = s->open_task(task_id(9), 1024, 1024);
  REQUIRE(h.has_value());
  std::shared_ptr<task_handle> t = std::move(h).value();
  REQUIRE(t->write(0, as_span(data)).has_value());
  f.close(s);
  CHECK(read_all(*t) == data);
  CHECK(t->sync().has_value());
  auto late = t->mark_piece_finished(0, digest(0));
  REQUIRE_FALSE(late.has_value());
  CHECK(late.error().is(errc::cancelled));
  t.reset();  // must not touch the destroyed store
}
