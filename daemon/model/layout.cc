#include "daemon/model/layout.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace shoal::model {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

std::string errno_text(int e) { return std::strerror(e); }

struct unique_fd {
  int fd = -1;
  unique_fd() = default;
  explicit unique_fd(int f) : fd(f) {}
  unique_fd(unique_fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~unique_fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

std::vector<std::string> split(const std::string& rel) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i <= rel.size()) {
    auto j = rel.find('/', i);
    if (j == std::string::npos) j = rel.size();
    if (j > i) out.push_back(rel.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

// Opens the parent directory of `rel` (a safe relative path) under root,
// component by component without following symlinks; creates missing
// directories (0755) when `create`. Returns the fd and sets `name` to the
// last component.
result<unique_fd> open_parent(int root, const std::string& rel, bool create, std::string& name) {
  auto parts = split(rel);
  if (parts.empty()) return error(errc::invalid_argument, "empty path");
  name = parts.back();
  parts.pop_back();
  unique_fd cur(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (cur.fd < 0) return error(errc::io, "dup: " + errno_text(errno));
  std::string walked;
  for (const auto& c : parts) {
    walked += (walked.empty() ? "" : "/") + c;
    int fd = ::openat(cur.fd, c.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
      if (::mkdirat(cur.fd, c.c_str(), 0755) != 0 && errno != EEXIST)
        return error(errc::io, "mkdir " + walked + ": " + errno_text(errno));
      fd = ::openat(cur.fd, c.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
      if (errno == ELOOP || errno == ENOTDIR)
        return error(errc::invalid_argument,
                     "'" + walked + "' is a symlink or a file, not a directory (entries may not "
                     "be written through symlinks)");
      return error(errc::io, "open " + walked + ": " + errno_text(errno));
    }
    cur = unique_fd(fd);
  }
  return cur;
}

// Removes whatever non-directory is at (dir, name) so a new entry can take it.
result<void> clear_slot(int dir, const std::string& name, const std::string& rel) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return ok();
  if (S_ISDIR(st.st_mode))
    return error(errc::invalid_argument, "'" + rel + "' is already a directory");
  if (::unlinkat(dir, name.c_str(), 0) != 0)
    return error(errc::io, "replace " + rel + ": " + errno_text(errno));
  return ok();
}

// {atime: leave as is, mtime: ns since the epoch} for futimens/utimensat.
struct mtime_times {
  timespec ts[2];
  explicit mtime_times(std::int64_t ns) {
    ts[0].tv_sec = 0;
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_sec = ns / 1000000000;
    ts[1].tv_nsec = ns % 1000000000;
    if (ts[1].tv_nsec < 0) {
      ts[1].tv_nsec += 1000000000;
      --ts[1].tv_sec;
    }
  }
};

void set_mtime_fd(int fd, std::optional<std::int64_t> ns) {
  if (!ns) return;
  mtime_times t(*ns);
  ::futimens(fd, t.ts);
}

void set_mtime_at(int dir, const std::string& name, std::optional<std::int64_t> ns) {
  if (!ns) return;
  mtime_times t(*ns);
  ::utimensat(dir, name.c_str(), t.ts, AT_SYMLINK_NOFOLLOW);
}

result<void> copy_file(int src, int dst, std::uint64_t& bytes, const std::string& what) {
  loff_t in_off = 0;
  for (;;) {
    auto n = ::copy_file_range(src, &in_off, dst, nullptr, 1 << 30, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP) break;
      return error(errc::io, "copy " + what + ": " + errno_text(errno));
    }
    if (n == 0) return ok();
    bytes += static_cast<std::uint64_t>(n);
  }
  // fallback: read/write
  std::vector<char> buf(1 << 20);
  for (;;) {
    auto n = ::pread(src, buf.data(), buf.size(), in_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return error(errc::io, "read cache file for " + what + ": " + errno_text(errno));
    }
    if (n == 0) return ok();
    std::size_t done = 0;
    while (done < static_cast<std::size_t>(n)) {
      auto w = ::write(dst, buf.data() + done, static_cast<std::size_t>(n) - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return error(errno == ENOSPC ? errc::no_space : errc::io,
                     "write " + what + ": " + errno_text(errno));
      }
      done += static_cast<std::size_t>(w);
    }
    in_off += n;
    bytes += static_cast<std::uint64_t>(n);
  }
}

// A symlink target is safe when it is relative, and after any number of
// leading ".." (no more than the link's depth) only descends.
result<void> check_symlink_target(const std::string& rel, const std::string& target) {
  auto bad = [&](const char* why) {
    return error(errc::invalid_argument, "symlink '" + rel + "' -> '" + target + "': " + why +
                                             " (links may not leave the output directory)");
  };
  if (target.empty()) return bad("empty target");
  if (target.front() == '/') return bad("absolute target");
  auto depth = static_cast<long>(split(rel).size()) - 1;  // directories above the link
  long ups = 0;
  bool descended = false;
  for (const auto& c : split(target)) {
    if (c == ".") continue;
    if (c == "..") {
      if (descended) return bad("'..' after a name");
      if (++ups > depth) return bad("target leaves the directory");
    } else {
      descended = true;
    }
  }
  return ok();
}

// libarchive read callbacks are not needed: archive_read_open_fd.
struct archive_ptr {
  archive* a = archive_read_new();
  ~archive_ptr() { archive_read_free(a); }
};

}  // namespace

std::optional<marker> read_marker(const fs::path& dir) {
  std::ifstream in(dir / kMarkerName);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (1 << 20)) return std::nullopt;
  boost::system::error_code ec;
  auto v = json::parse(ss.str(), ec);
  if (ec || !v.is_object()) return std::nullopt;
  marker m;
  const auto& o = v.as_object();
  auto str = [&](const char* k) -> std::string {
    auto* x = o.if_contains(k);
    return x && x->is_string() ? std::string(x->as_string()) : std::string();
  };
  auto list = [&](const char* k) {
    std::vector<std::string> out;
    if (auto* x = o.if_contains(k); x && x->is_array())
      for (const auto& e : x->as_array())
        if (e.is_string()) out.emplace_back(e.as_string());
    return out;
  };
  m.manifest_digest = str("manifest_digest");
  m.reference = str("reference");
  m.include = list("include");
  m.exclude = list("exclude");
  if (m.manifest_digest.empty()) return std::nullopt;
  return m;
}

bool same_content(const marker& a, const marker& b) {
  return a.manifest_digest == b.manifest_digest && a.include == b.include &&
         a.exclude == b.exclude;
}

result<void> check_target(const fs::path& dir) {
  if (!dir.is_absolute())
    return error(errc::invalid_argument,
                 "output directory '" + dir.string() + "' is not an absolute path");
  if (dir == dir.root_path())
    return error(errc::invalid_argument, "output directory may not be '/'");
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      std::error_code ec;
      auto parent = dir.parent_path();
      if (!fs::is_directory(parent, ec))
        return error(errc::invalid_argument,
                     "output directory's parent " + parent.string() +
                         " does not exist (create it first)");
      return ok();
    }
    return error(errc::io, "output directory " + dir.string() + ": " + errno_text(errno));
  }
  if (!S_ISDIR(st.st_mode))
    return error(errc::invalid_argument,
                 "output directory " + dir.string() + " exists and is not a directory");
  if (read_marker(dir)) return ok();
  std::error_code ec;
  if (fs::directory_iterator(dir, ec) != fs::directory_iterator())
    return error(errc::invalid_argument,
                 "output directory " + dir.string() +
                     " is not empty and was not made by a pull (give a new or empty directory)");
  if (ec) return error(errc::io, "output directory " + dir.string() + ": " + ec.message());
  return ok();
}

result<void> check_free_space(const fs::path& dir, std::uint64_t needed) {
  fs::path p = dir;
  std::error_code ec;
  while (!p.empty() && !fs::exists(p, ec)) p = p.parent_path();
  if (p.empty()) p = "/";
  struct statvfs vfs {};
  if (::statvfs(p.c_str(), &vfs) != 0)
    return error(errc::io, "statvfs " + p.string() + ": " + errno_text(errno));
  std::uint64_t avail = std::uint64_t{vfs.f_bavail} * vfs.f_frsize;
  if (avail < needed)
    return error(errc::no_space, "the filesystem of " + p.string() + " has " +
                                     std::to_string(avail) + " bytes free but the model needs " +
                                     std::to_string(needed) + " (free space or pick another directory)");
  return ok();
}

bool same_filesystem(const fs::path& a, const fs::path& b) {
  struct stat sa {}, sb {};
  fs::path pb = b;
  std::error_code ec;
  while (!pb.empty() && !fs::exists(pb, ec)) pb = pb.parent_path();
  return ::stat(a.c_str(), &sa) == 0 && ::stat(pb.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev;
}

void remove_tree(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(p, ec))) return;
  // read-only directories (mode from a tar) would stop remove_all
  if (fs::is_directory(fs::symlink_status(p, ec))) {
    ::chmod(p.c_str(), 0700);
    for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::none, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
    }
  }
  fs::remove_all(p, ec);
}

result<staging_dir> staging_dir::create(const fs::path& dir) {
  auto parent = dir.parent_path();
  auto prefix = "." + dir.filename().string() + ".shoal-staging-";
  std::error_code ec;
  for (auto it = fs::directory_iterator(parent, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.rfind(prefix, 0) == 0) remove_tree(it->path());
  }
  std::string templ = (parent / (prefix + "XXXXXX")).string();
  if (!::mkdtemp(templ.data()))
    return error(errc::io, "cannot create a staging directory in " + parent.string() + ": " +
                               errno_text(errno) + " (is it writable by shoald?)");
  ::chmod(templ.c_str(), 0755);
  int fd = ::open(templ.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    remove_tree(templ);
    return error(errc::io, "open " + templ + ": " + errno_text(errno));
  }
  return staging_dir(templ, fd);
}

staging_dir::staging_dir(staging_dir&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      committed_(o.committed_),
      dirs_(std::move(o.dirs_)) {
  o.committed_ = true;
}

staging_dir::~staging_dir() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !path_.empty()) remove_tree(path_);
}

result<void> staging_dir::place_raw(const std::string& rel, const fs::path& blob,
                                    const file_metadata& md, layout_stats& st) {
  std::string name;
  auto parent = open_parent(fd_, rel, true, name);
  if (!parent) return std::move(parent).error();
  if (auto r = clear_slot(parent->fd, name, rel); !r) return r;
  if (::linkat(AT_FDCWD, blob.c_str(), parent->fd, name.c_str(), 0) == 0) {
    // The inode is the cache's immutable file: keep it read-only.
    if (md.mode) ::fchmodat(parent->fd, name.c_str(), *md.mode & 0555, 0);
    set_mtime_at(parent->fd, name, md.mtime_ns);
    ++st.linked;
    ++st.files;
    return ok();
  }
  const int link_errno = errno;
  if (link_errno != EXDEV && link_errno != EPERM && link_errno != EMLINK &&
      link_errno != EOPNOTSUPP)
    return error(errc::io, "hard link " + blob.string() + " -> " + rel + ": " +
                               errno_text(link_errno));
  unique_fd src(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
  if (src.fd < 0) return error(errc::io, "open cache file " + blob.string() + ": " + errno_text(errno));
  unique_fd dst(::openat(parent->fd, name.c_str(),
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (dst.fd < 0) return error(errc::io, "create " + rel + ": " + errno_text(errno));
  if (auto r = copy_file(src.fd, dst.fd, st.bytes, rel); !r) return r;
  ::fchmod(dst.fd, md.mode ? *md.mode & 0777 : 0644);
  set_mtime_fd(dst.fd, md.mtime_ns);
  ++st.copied;
  ++st.files;
  return ok();
}

result<void> staging_dir::extract(const fs::path& blob, layer_format f, const std::string& what,
                                  const std::atomic<bool>* cancelled, layout_stats& st) {
  auto fail = [&](errc c, const std::string& msg) {
    return error(c, "layer " + what + ": " + msg);
  };
  unique_fd src(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
  if (src.fd < 0) return fail(errc::io, "open cache file " + blob.string() + ": " + errno_text(errno));
  archive_ptr ar;
  archive_read_support_format_tar(ar.a);
  archive_read_support_format_gnutar(ar.a);
  switch (f) {
    case layer_format::tar_gzip: archive_read_support_filter_gzip(ar.a); break;
    case layer_format::tar_zstd: archive_read_support_filter_zstd(ar.a); break;
    default: archive_read_support_filter_none(ar.a); break;
  }
  if (archive_read_open_fd(ar.a, src.fd, 1 << 20) != ARCHIVE_OK)
    return fail(errc::invalid_argument,
                std::string("not a readable ") + format_name(f) + " archive: " +
                    (archive_error_string(ar.a) ? archive_error_string(ar.a) : "?"));
  std::vector<char> buf;
  std::size_t entries = 0;
  for (;;) {
    if (cancelled && cancelled->load()) return fail(errc::cancelled, "cancelled");
    archive_entry* e = nullptr;
    int r = archive_read_next_header(ar.a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN)
      return fail(errc::invalid_argument,
                  std::string("corrupt archive: ") +
                      (archive_error_string(ar.a) ? archive_error_string(ar.a) : "?"));
    if (++entries > 1000000) return fail(errc::too_large, "more than 1,000,000 entries");
    const char* raw_name = archive_entry_pathname(e);
    std::string entry_name = raw_name ? raw_name : "";
    const auto type = archive_entry_filetype(e);
    const char* hardlink = archive_entry_hardlink(e);
    auto rel = safe_relative_path(entry_name);
    if (!rel) {
      bool is_root = (type == AE_IFDIR) && !entry_name.empty() && entry_name.front() != '/' &&
                     entry_name.find("..") == std::string::npos;
      if (is_root) continue;  // "./": the directory itself
      return fail(errc::invalid_argument, "entry '" + entry_name + "': " + rel.error().message);
    }
    std::optional<std::int64_t> mtime;
    if (archive_entry_mtime_is_set(e))
      mtime = std::int64_t{archive_entry_mtime(e)} * 1000000000 + archive_entry_mtime_nsec(e);
    const std::uint32_t perm = archive_entry_perm(e) & 0777;
    std::string name;
    auto parent = open_parent(fd_, *rel, true, name);
    if (!parent) return fail(errc::invalid_argument, "entry '" + entry_name + "': " + parent.error().message);

    if (hardlink) {
      auto target = safe_relative_path(hardlink);
      if (!target)
        return fail(errc::invalid_argument,
                    "hard link '" + *rel + "': " + target.error().message);
      std::string tname;
      auto tparent = open_parent(fd_, *target, false, tname);
      if (!tparent)
        return fail(errc::invalid_argument, "hard link '" + *rel + "' -> '" + *target +
                                                "': " + tparent.error().message);
      if (auto c = clear_slot(parent->fd, name, *rel); !c) return fail(errc::invalid_argument, c.error().message);
      if (::linkat(tparent->fd, tname.c_str(), parent->fd, name.c_str(), 0) != 0)
        return fail(errc::invalid_argument, "hard link '" + *rel + "' -> '" + *target + "': " +
                                                errno_text(errno) +
                                                " (links may only point to earlier entries)");
      ++st.files;
      continue;
    }
    switch (type) {
      case AE_IFDIR: {
        struct stat s {};
        if (::fstatat(parent->fd, name.c_str(), &s, AT_SYMLINK_NOFOLLOW) == 0) {
          if (!S_ISDIR(s.st_mode))
            if (auto c = clear_slot(parent->fd, name, *rel); !c)
              return fail(errc::invalid_argument, c.error().message);
        }
        if (::mkdirat(parent->fd, name.c_str(), 0755) != 0 && errno != EEXIST)
          return fail(errc::io, "mkdir " + *rel + ": " + errno_text(errno));
        dirs_.push_back({*rel, perm, mtime});
        break;
      }
      case AE_IFLNK: {
        const char* target = archive_entry_symlink(e);
        if (auto c = check_symlink_target(*rel, target ? target : ""); !c)
          return fail(errc::invalid_argument, c.error().message);
        if (auto c = clear_slot(parent->fd, name, *rel); !c)
          return fail(errc::invalid_argument, c.error().message);
        if (::symlinkat(target, parent->fd, name.c_str()) != 0)
          return fail(errc::io, "symlink " + *rel + ": " + errno_text(errno));
        break;
      }
      case AE_IFREG: {
        if (auto c = clear_slot(parent->fd, name, *rel); !c)
          return fail(errc::invalid_argument, c.error().message);
        unique_fd out(::openat(parent->fd, name.c_str(),
                               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (out.fd < 0) return fail(errc::io, "create " + *rel + ": " + errno_text(errno));
        const void* block = nullptr;
        size_t size = 0;
        la_int64_t offset = 0;
        std::uint64_t end = 0;
        for (;;) {
          int rr = archive_read_data_block(ar.a, &block, &size, &offset);
          if (rr == ARCHIVE_EOF) break;
          if (rr < ARCHIVE_WARN)
            return fail(errc::invalid_argument,
                        "entry '" + *rel + "': " +
                            (archive_error_string(ar.a) ? archive_error_string(ar.a) : "?"));
          if (cancelled && cancelled->load()) return fail(errc::cancelled, "cancelled");
          const char* p = static_cast<const char*>(block);
          std::size_t done = 0;
          while (done < size) {
            auto w = ::pwrite(out.fd, p + done, size - done, offset + static_cast<off_t>(done));
            if (w < 0) {
              if (errno == EINTR) continue;
              return fail(errno == ENOSPC ? errc::no_space : errc::io,
                          "write " + *rel + ": " + errno_text(errno));
            }
            done += static_cast<std::size_t>(w);
          }
          st.bytes += size;
          end = std::max<std::uint64_t>(end, static_cast<std::uint64_t>(offset) + size);
        }
        // sparse entries: the size includes trailing holes
        auto want = static_cast<std::uint64_t>(archive_entry_size(e));
        if (want > end) ::ftruncate(out.fd, static_cast<off_t>(want));
        ::fchmod(out.fd, perm);
        set_mtime_fd(out.fd, mtime);
        ++st.files;
        break;
      }
      default:
        return fail(errc::invalid_argument,
                    "entry '" + *rel + "' is a device, fifo or socket (not allowed in a model)");
    }
  }
  ++st.extracted;
  return ok();
}

result<void> staging_dir::commit(const fs::path& dir, const marker& m) {
  // directories deepest first, so a read-only parent is set after its children
  std::sort(dirs_.begin(), dirs_.end(), [](const dir_attr& a, const dir_attr& b) {
    return std::count(a.rel.begin(), a.rel.end(), '/') > std::count(b.rel.begin(), b.rel.end(), '/');
  });
  for (const auto& d : dirs_) {
    std::string name;
    auto parent = open_parent(fd_, d.rel, false, name);
    if (!parent) continue;
    set_mtime_at(parent->fd, name, d.mtime_ns);
    ::fchmodat(parent->fd, name.c_str(), d.mode | 0700, 0);  // the owner keeps access
  }
  json::object o;
  o["manifest_digest"] = m.manifest_digest;
  o["reference"] = m.reference;
  json::array inc, exc;
  for (const auto& s : m.include) inc.emplace_back(s);
  for (const auto& s : m.exclude) exc.emplace_back(s);
  o["include"] = std::move(inc);
  o["exclude"] = std::move(exc);
  {
    auto text = json::serialize(o) + "\n";
    unique_fd mf(::openat(fd_, kMarkerName, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (mf.fd < 0) return error(errc::io, "write marker in " + path_.string() + ": " + errno_text(errno));
    if (::write(mf.fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
      return error(errc::io, "write marker in " + path_.string() + ": " + errno_text(errno));
  }
  ::fsync(fd_);
  if (::rename(path_.c_str(), dir.c_str()) == 0) {
    committed_ = true;
  } else if (errno == ENOTEMPTY || errno == EEXIST) {
    // An earlier pull's directory: swap atomically, then drop the old one.
    if (::renameat2(AT_FDCWD, path_.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) != 0)
      return error(errc::io, "replace " + dir.string() + ": " + errno_text(errno));
    committed_ = true;
    remove_tree(path_);  // now holds the old directory
  } else {
    return error(errc::io, "rename " + path_.string() + " -> " + dir.string() + ": " +
                               errno_text(errno));
  }
  if (int pfd = ::open(dir.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); pfd >= 0) {
    ::fsync(pfd);
    ::close(pfd);
  }
  return ok();
}

result<layout_stats> lay_out(const fs::path& dir, const std::vector<placed_layer>& layers,
                             const marker& m, const std::atomic<bool>* cancelled) {
  auto staging = staging_dir::create(dir);
  if (!staging) return std::move(staging).error();
  layout_stats st;
  for (const auto& l : layers) {
    if (cancelled && cancelled->load()) return error(errc::cancelled, "pull cancelled");
    if (l.desc.format == layer_format::raw) {
      if (auto r = staging->place_raw(l.desc.path, l.blob_file, l.desc.metadata, st); !r)
        return error(r.error().code, "layer " + l.desc.blob.str() + " (" + l.desc.path +
                                         "): " + r.error().message);
    } else {
      std::string what = l.desc.blob.str() + (l.desc.path.empty() ? "" : " (" + l.desc.path + ")");
      if (auto r = staging->extract(l.blob_file, l.desc.format, what, cancelled, st); !r)
        return std::move(r).error();
    }
  }
  if (auto r = staging->commit(dir, m); !r) return std::move(r).error();
  return st;
}

}  // namespace shoal::model
