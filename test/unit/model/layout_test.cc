// Layout: hard links from the cache, tar extraction with the safety rules,
// staging and the atomic switch, the marker.
#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "daemon/model/layout.h"

using namespace shoal;
using namespace shoal::model;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("shoal-layout-test-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~temp_dir() { remove_tree(path); }
};

struct entry {
  std::string name;
  enum kind { file, dir, symlink, hardlink } type = file;
  std::string data;  // file contents or link target
  unsigned mode = 0644;
};

// Writes a tar (pax) with libarchive; `filter` "gzip", "zstd" or "".
void write_tar(const fs::path& out, const std::vector<entry>& entries, const char* filter = "") {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (std::string(filter) == "gzip") archive_write_add_filter_gzip(a);
  if (std::string(filter) == "zstd") archive_write_add_filter_zstd(a);
  REQUIRE(archive_write_open_filename(a, out.c_str()) == ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.name.c_str());
    archive_entry_set_mtime(ae, 1700000000, 0);
    switch (e.type) {
      case entry::file:
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, e.mode);
        archive_entry_set_size(ae, static_cast<la_int64_t>(e.data.size()));
        break;
      case entry::dir:
        archive_entry_set_filetype(ae, AE_IFDIR);
        archive_entry_set_perm(ae, e.mode);
        break;
      case entry::symlink:
        archive_entry_set_filetype(ae, AE_IFLNK);
        archive_entry_set_symlink(ae, e.data.c_str());
        break;
      case entry::hardlink:
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_hardlink(ae, e.data.c_str());
        break;
    }
    REQUIRE(archive_write_header(a, ae) == ARCHIVE_OK);
    if (e.type == entry::file && !e.data.empty())
      archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& data, unsigned mode = 0444) {
  std::ofstream(p, std::ios::binary) << data;
  ::chmod(p.c_str(), mode);
}

placed_layer tar_layer(const fs::path& blob, layer_format f, const std::string& path = "") {
  placed_layer l;
  l.desc.format = f;
  l.desc.path = path;
  l.desc.blob.hex = std::string(64, 'e');
  l.blob_file = blob;
  return l;
}

marker mk(const std::string& d = "sha256:" + std::string(64, '1')) {
  return {d, "127.0.0.1:5000/m:v1", {}, {}};
}

// Everything under `root` (relative paths), to check nothing was written elsewhere.
std::vector<std::string> tree(const fs::path& root) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(root))
    out.push_back(fs::relative(e.path(), root).string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("raw layers are hard-linked from the cache, read-only, with their mtime") {
  temp_dir t;
  fs::create_directories(t.path / "cache");
  auto blob = t.path / "cache" / "blob1";
  write_file(blob, "weights!");
  placed_layer l;
  l.desc.format = layer_format::raw;
  l.desc.path = "sub/dir/model.bin";
  l.desc.metadata.mode = 0755;
  l.desc.metadata.mtime_ns = 1700000000LL * 1000000000;
  l.blob_file = blob;
  auto dir = t.path / "out";
  auto st = lay_out(dir, {l}, mk(), nullptr);
  REQUIRE(st);
  CHECK(st->linked == 1);
  struct stat a {}, b {};
  REQUIRE(::stat(blob.c_str(), &a) == 0);
  REQUIRE(::stat((dir / "sub/dir/model.bin").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK((b.st_mode & 07777) == 0555);  // exec bits kept, write bits never on the cache inode
  CHECK(b.st_mtime == 1700000000);
  CHECK(read_file(dir / "sub/dir/model.bin") == "weights!");
  auto m = read_marker(dir);
  REQUIRE(m);
  CHECK(m->manifest_digest == mk().manifest_digest);
  // no staging directory is left behind
  for (auto& e : fs::directory_iterator(t.path))
    CHECK(e.path().filename().string().find("staging") == std::string::npos);
}

TEST_CASE("tar layers with nested directories extract, gzip and zstd too") {
  temp_dir t;
  for (const char* filter : {"", "gzip", "zstd"}) {
    auto blob = t.path / (std::string("layer") + filter);
    write_tar(blob, {{"config", entry::dir, "", 0755},
                     {"config/tokenizer/vocab.json", entry::file, "{\"a\":1}", 0640},
                     {"config/run.sh", entry::file, "#!/bin/sh\n", 0755},
                     {"config/latest", entry::symlink, "tokenizer/vocab.json"},
                     {"config/alias.json", entry::hardlink, "config/tokenizer/vocab.json"},
                     {"./docs/README.md", entry::file, "# hi\n"}},
              filter);
    auto dir = t.path / (std::string("out") + filter);
    auto f = std::string(filter) == "gzip"   ? layer_format::tar_gzip
             : std::string(filter) == "zstd" ? layer_format::tar_zstd
                                             : layer_format::tar;
    auto st = lay_out(dir, {tar_layer(blob, f)}, mk(), nullptr);
    REQUIRE(st);
    CHECK(read_file(dir / "config/tokenizer/vocab.json") == "{\"a\":1}");
    CHECK(read_file(dir / "config/latest") == "{\"a\":1}");
    CHECK(read_file(dir / "config/alias.json") == "{\"a\":1}");
    CHECK(read_file(dir / "docs/README.md") == "# hi\n");
    CHECK(fs::is_symlink(dir / "config/latest"));
    struct stat s {};
    REQUIRE(::stat((dir / "config/run.sh").c_str(), &s) == 0);
    CHECK((s.st_mode & 0777) == 0755);
    CHECK(s.st_mtime == 1700000000);
    REQUIRE(::stat((dir / "config/tokenizer/vocab.json").c_str(), &s) == 0);
    CHECK((s.st_mode & 0777) == 0640);
  }
}

TEST_CASE("malicious tars are refused and write nothing outside the directory") {
  struct bad_case {
    const char* what;
    std::vector<entry> entries;
    const char* message;
  };
  std::vector<bad_case> cases = {
      {"dot-dot escape", {{"../escaped.txt", entry::file, "x"}}, ".."},
      {"nested dot-dot", {{"a/../../escaped.txt", entry::file, "x"}}, ".."},
      {"absolute path", {{"/tmp/shoal-escaped-abs.txt", entry::file, "x"}}, "absolute"},
      {"symlink escape", {{"link", entry::symlink, "../"}}, "leaves"},
      {"absolute symlink", {{"link", entry::symlink, "/etc"}}, "absolute"},
      {"symlink then write through it",
       {{"d", entry::dir, ""}, {"d/up", entry::symlink, ".."}, {"x", entry::symlink, "d/up/.."}},
       "'..' after a name"},
      {"write through a symlink",
       {{"inside", entry::dir, ""}, {"l", entry::symlink, "inside"}, {"l/f.txt", entry::file, "x"}},
       "symlink"},
      {"hard link escape", {{"h", entry::hardlink, "../outside.txt"}}, ".."},
      {"hard link absolute", {{"h", entry::hardlink, "/etc/passwd"}}, "absolute"},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.what) {
      temp_dir t;
      write_file(t.path / "outside.txt", "keep", 0644);
      auto blob = t.path / "evil.tar";
      write_tar(blob, c.entries);
      auto before = tree(t.path);
      auto dir = t.path / "out";
      auto st = lay_out(dir, {tar_layer(blob, layer_format::tar)}, mk(), nullptr);
      REQUIRE_FALSE(st);
      INFO(st.error().message);
      CHECK(st.error().is(errc::invalid_argument));
      CHECK(st.error().message.find(c.message) != std::string::npos);
      CHECK(st.error().message.find("layer sha256:") != std::string::npos);
      CHECK_FALSE(fs::exists(dir));
      CHECK(tree(t.path) == before);  // the staging directory is gone too
      CHECK(read_file(t.path / "outside.txt") == "keep");
      CHECK_FALSE(fs::exists("/tmp/shoal-escaped-abs.txt"));
    }
  }
}

TEST_CASE("a second pull replaces a pulled directory atomically; foreign directories are refused") {
  temp_dir t;
  auto blob1 = t.path / "b1";
  auto blob2 = t.path / "b2";
  write_file(blob1, "one");
  write_file(blob2, "two");
  auto raw = [](const fs::path& b, const std::string& p) {
    placed_layer l;
    l.desc.format = layer_format::raw;
    l.desc.path = p;
    l.blob_file = b;
    return l;
  };
  auto dir = t.path / "model";
  REQUIRE(check_target(dir));
  REQUIRE(lay_out(dir, {raw(blob1, "a.bin")}, mk("sha256:" + std::string(64, '1')), nullptr));
  REQUIRE(check_target(dir));  // ours: has a marker
  REQUIRE(lay_out(dir, {raw(blob2, "b.bin")}, mk("sha256:" + std::string(64, '2')), nullptr));
  CHECK_FALSE(fs::exists(dir / "a.bin"));
  CHECK(read_file(dir / "b.bin") == "two");
  CHECK(read_marker(dir)->manifest_digest == "sha256:" + std::string(64, '2'));
  CHECK(read_file(blob1) == "one");  // the cache file is untouched

  auto foreign = t.path / "foreign";
  fs::create_directories(foreign);
  write_file(foreign / "mine.txt", "x", 0644);
  auto r = check_target(foreign);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("not empty") != std::string::npos);
  fs::create_directories(t.path / "empty");
  CHECK(check_target(t.path / "empty"));
  CHECK_FALSE(check_target("relative/dir"));
  CHECK_FALSE(check_target(t.path / "missing-parent" / "x"));
}

TEST_CASE("cancellation stops the layout and removes the staging directory") {
  temp_dir t;
  auto blob = t.path / "l.tar";
  write_tar(blob, {{"a.txt", entry::file, "a"}});
  std::atomic<bool> cancelled{true};
  auto st = lay_out(t.path / "out", {tar_layer(blob, layer_format::tar)}, mk(), &cancelled);
  REQUIRE_FALSE(st);
  CHECK(st.error().is(errc::cancelled));
  CHECK(tree(t.path) == std::vector<std::string>{"l.tar"});
}

TEST_CASE("free space check names the figures") {
  temp_dir t;
  CHECK(check_free_space(t.path / "x", 1));
  auto r = check_free_space(t.path / "x", std::uint64_t{1} << 62);
  REQUIRE_FALSE(r);
  CHECK(r.error().is(errc::no_space));
  CHECK(r.error().message.find("bytes free") != std::string::npos);
}

TEST_CASE("a corrupt archive is an error naming the layer") {
  temp_dir t;
  write_file(t.path / "junk", std::string(1000, 'z'), 0644);
  auto st = lay_out(t.path / "out", {tar_layer(t.path / "junk", layer_format::tar_gzip)}, mk(), nullptr);
  REQUIRE_FALSE(st);
  CHECK(st.error().message.find("layer sha256:") != std::string::npos);
}
