#pragma once
// Lays a model's files out under a directory (DESIGN §9).
//
// - The directory is built aside, in a staging directory next to it
//   (`.<name>.shoal-staging-XXXXXX`), and appears at once: renamed into
//   place, or atomically exchanged (renameat2 RENAME_EXCHANGE) with a
//   previous pull's directory, which is then removed.
// - Raw layers are hard-linked from the cache (the cache file is immutable,
//   so the link's permission bits never include write bits); when the
//   directory is on another filesystem they are copied.
// - tar, tar+gzip and tar+zstd layers are extracted with libarchive. Entries
//   with absolute paths or `..`, paths through a symlink, symlinks whose target
//   leaves the directory, hard links to outside, and device/fifo entries are
//   refused: the layer fails with an error naming the entry, and nothing is
//   written outside the staging directory (every path is opened component by
//   component with O_NOFOLLOW under the staging directory's fd).
// - A marker file `.shoal-pull.json` records the manifest digest and filters;
//   a directory whose marker matches is up to date (the pull is a no-op).
//
// Blocking file-system work: runs on a blocking-work thread, never on the
// I/O thread. Cancellation is polled between files and data blocks.

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/model/manifest.h"

namespace shoal::model {

inline constexpr const char* kMarkerName = ".shoal-pull.json";

// What a directory was pulled from.
struct marker {
  std::string manifest_digest;  // "sha256:..."
  std::string reference;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
};

// Reads DIR/.shoal-pull.json (nullopt when missing or unreadable).
std::optional<marker> read_marker(const std::filesystem::path& dir);
// The same manifest and filters (the reference may differ: tag vs digest).
bool same_content(const marker& a, const marker& b);

// Checks `dir` may receive a pull: absolute; missing, an empty directory, or
// a directory an earlier pull made (it has a marker). Errors say what to do.
result<void> check_target(const std::filesystem::path& dir);

// Checks the filesystem holding `dir` (its nearest existing ancestor) has
// `needed` bytes free; errc::no_space names both figures.
result<void> check_free_space(const std::filesystem::path& dir, std::uint64_t needed);

// Whether `a` and `b` (existing paths) are on the same filesystem.
bool same_filesystem(const std::filesystem::path& a, const std::filesystem::path& b);

// One layer to place, with the cache file holding its verified bytes.
struct placed_layer {
  layer desc;
  std::filesystem::path blob_file;
};

struct layout_stats {
  std::uint64_t files = 0;      // regular files written or linked
  std::uint64_t linked = 0;     // raw layers hard-linked from the cache
  std::uint64_t copied = 0;     // raw layers copied (other filesystem)
  std::uint64_t extracted = 0;  // tar layers extracted
  std::uint64_t bytes = 0;      // bytes written (copies and extracted data)
};

// A staging directory next to the target; removed on destruction unless
// committed.
class staging_dir {
 public:
  // Removes stale staging directories for `dir` (from a cancelled or crashed
  // pull) and creates a new one (mode 0755).
  static result<staging_dir> create(const std::filesystem::path& dir);
  staging_dir(staging_dir&&) noexcept;
  staging_dir& operator=(staging_dir&&) = delete;
  ~staging_dir();
  const std::filesystem::path& path() const { return path_; }
  int fd() const { return fd_; }

  // Hard-links (or copies) a raw layer's cache file to `rel`, with the
  // layer's file metadata (mode without write bits when linked, mtime).
  result<void> place_raw(const std::string& rel, const std::filesystem::path& blob,
                         const file_metadata& md, layout_stats& st);
  // Extracts a tar layer (per the safety rules above).
  result<void> extract(const std::filesystem::path& blob, layer_format f,
                       const std::string& what, const std::atomic<bool>* cancelled,
                       layout_stats& st);
  // Applies directory modes and mtimes recorded during extraction, writes the
  // marker and moves the directory into place at `dir`.
  result<void> commit(const std::filesystem::path& dir, const marker& m);

 private:
  staging_dir(std::filesystem::path p, int fd) : path_(std::move(p)), fd_(fd) {}
  struct dir_attr {
    std::string rel;
    std::uint32_t mode;
    std::optional<std::int64_t> mtime_ns;
  };
  std::filesystem::path path_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<dir_attr> dirs_;
};

// Removes a directory tree we made (makes read-only directories writable
// first; never follows symlinks).
void remove_tree(const std::filesystem::path& p);

// Everything for one pull: staging, every layer, commit.
result<layout_stats> lay_out(const std::filesystem::path& dir, const std::vector<placed_layer>& layers,
                             const marker& m, const std::atomic<bool>* cancelled);

}  // namespace shoal::model
