#include "daemon/ctl/containerd_hosts.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace shoal::ctl::containerd {
namespace {

namespace fs = std::filesystem;

bool is_label_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-';
}

// host name (labels of [A-Za-z0-9-], not starting or ending with '-') or IPv4
bool valid_hostname(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  std::size_t start = 0;
  while (start <= h.size()) {
    auto dot = h.find('.', start);
    auto label = h.substr(start, dot == std::string_view::npos ? std::string_view::npos
                                                               : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return false;
    for (char c : label)
      if (!is_label_char(c)) return false;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return true;
}

bool valid_ipv6_literal(std::string_view h) {  // "[...]"
  if (h.size() < 4 || h.front() != '[' || h.back() != ']') return false;
  for (char c : h.substr(1, h.size() - 2))
    if (std::isxdigit(static_cast<unsigned char>(c)) == 0 && c != ':' && c != '.') return false;
  return true;
}

bool valid_port(std::string_view p) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  return !p.empty() && ec == std::errc() && end == p.data() + p.size() && v >= 1 && v <= 65535;
}

// HOST[:PORT] with HOST a name, IPv4 or [IPv6].
bool valid_hostport(std::string_view hp) {
  std::string_view host = hp, port;
  if (!hp.empty() && hp.front() == '[') {
    auto close = hp.find(']');
    if (close == std::string_view::npos) return false;
    host = hp.substr(0, close + 1);
    auto rest = hp.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
      if (!valid_port(port)) return false;
    }
    return valid_ipv6_literal(host);
  }
  if (auto colon = hp.rfind(':'); colon != std::string_view::npos) {
    host = hp.substr(0, colon);
    port = hp.substr(colon + 1);
    if (!valid_port(port)) return false;
  }
  return valid_hostname(host);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "scheme://rest" (scheme lowercased); no scheme: empty.
std::pair<std::string, std::string_view> split_scheme(std::string_view s) {
  auto p = s.find("://");
  if (p == std::string_view::npos) return {"", s};
  return {lower(s.substr(0, p)), s.substr(p + 3)};
}

std::string utc_stamp(std::chrono::system_clock::time_point now) {
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string errno_text(int e) { return std::strerror(e); }

result<void> write_all_sync(const fs::path& path, const std::string& content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return error(errc::io, "create " + path.string() + ": " + errno_text(errno) +
                               " (check that the directory is writable; run as root for "
                               "/etc/containerd)");
  std::size_t done = 0;
  while (done < content.size()) {
    auto n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return error(errc::io, "write " + path.string() + ": " + errno_text(e));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    return error(errc::io, "fsync " + path.string() + ": " + errno_text(e));
  }
  if (::close(fd) != 0) return error(errc::io, "close " + path.string() + ": " + errno_text(errno));
  return ok();
}

void sync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace

result<upstream> parse_registry(std::string_view arg) {
  if (arg == "_default") return upstream{"_default", ""};
  auto [scheme, rest] = split_scheme(arg);
  if (!scheme.empty() && scheme != "http" && scheme != "https")
    return error(errc::invalid_argument,
                 "--registry " + std::string(arg) + ": scheme must be http or https");
  if (scheme.empty()) scheme = "https";
  std::string_view hp = rest;
  if (!hp.empty() && hp.back() == '/') hp.remove_suffix(1);
  if (!valid_hostport(hp))
    return error(errc::invalid_argument,
                 "--registry " + std::string(arg) +
                     ": expected HOST[:PORT], http(s)://HOST[:PORT] or _default "
                     "(e.g. registry.example.com, 127.0.0.1:5000)");
  upstream u;
  u.dir = lower(hp);
  if (u.dir == "docker.io" || u.dir == "index.docker.io") {
    // What containerd itself uses for Docker Hub; the directory is docker.io.
    u.dir = "docker.io";
    u.server = "https://registry-1.docker.io";
  } else {
    u.server = scheme + "://" + u.dir;
  }
  return u;
}

result<std::string> parse_mirror(std::string_view url) {
  auto [scheme, rest] = split_scheme(url);
  if (scheme != "http" && scheme != "https")
    return error(errc::invalid_argument,
                 "--mirror " + std::string(url) +
                     ": expected http://HOST:PORT of shoald's mirror (e.g. http://127.0.0.1:7400)");
  std::string_view hp = rest;
  if (!hp.empty() && hp.back() == '/') hp.remove_suffix(1);
  if (hp.find_first_of("/?#@") != std::string_view::npos || !valid_hostport(hp))
    return error(errc::invalid_argument,
                 "--mirror " + std::string(url) +
                     ": expected http(s)://HOST[:PORT] without a path (shoald serves /v2/ at "
                     "the root), e.g. http://127.0.0.1:7400");
  return scheme + "://" + lower(hp);
}

std::string hosts_toml(const upstream& u, const std::string& mirror) {
  std::ostringstream out;
  out << "# Written by `shoalctl containerd-config`: pulls of "
      << (u.dir == "_default" ? std::string("every registry without its own directory")
                              : u.dir)
      << " go through shoald's mirror;\n"
         "# containerd falls back to the registry itself when shoald does not answer.\n";
  if (!u.server.empty()) out << "server = \"" << u.server << "\"\n";
  out << "\n[host.\"" << mirror << "\"]\n"
      << "  capabilities = [\"pull\", \"resolve\"]\n";
  return out.str();
}

result<write_result> write_hosts_toml(const fs::path& config_path, const std::string& dir,
                                      const std::string& content,
                                      std::chrono::system_clock::time_point now) {
  write_result res;
  const fs::path d = config_path / dir;
  res.path = d / "hosts.toml";
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec)
    return error(errc::io, "create directory " + d.string() + ": " + ec.message() +
                               " (check --config-path and permissions)");
  bool exists = fs::exists(res.path, ec);
  if (exists) {
    std::ifstream in(res.path, std::ios::binary);
    if (!in)
      return error(errc::io, "read " + res.path.string() + ": cannot open (check permissions)");
    std::ostringstream old;
    old << in.rdbuf();
    if (old.str() == content) {
      res.what = outcome::unchanged;
      return res;
    }
  }
  // Write aside, then rename over: containerd never reads a half-written file.
  fs::path tmp = d / (".hosts.toml.tmp-" + std::to_string(::getpid()));
  fs::remove(tmp, ec);
  if (auto w = write_all_sync(tmp, content); !w) return std::move(w).error();
  if (exists) {
    const std::string stamp = utc_stamp(now);
    fs::path backup = d / ("hosts.toml.bak-" + stamp);
    for (int i = 1; fs::exists(backup, ec); ++i)
      backup = d / ("hosts.toml.bak-" + stamp + "-" + std::to_string(i));
    // A hard link keeps the old file in place until the rename replaces it.
    fs::create_hard_link(res.path, backup, ec);
    if (ec) {
      ec.clear();
      fs::copy_file(res.path, backup, ec);
    }
    if (ec) {
      fs::remove(tmp, ec);
      return error(errc::io, "back up " + res.path.string() + " to " + backup.string() + ": " +
                                 ec.message() + " (nothing was changed)");
    }
    res.backup = backup;
    res.what = outcome::replaced;
  } else {
    res.what = outcome::created;
  }
  if (::rename(tmp.c_str(), res.path.c_str()) != 0) {
    int e = errno;
    fs::remove(tmp, ec);
    return error(errc::io, "rename " + tmp.string() + " to " + res.path.string() + ": " +
                               errno_text(e));
  }
  sync_dir(d);
  return res;
}

}  // namespace shoal::ctl::containerd
