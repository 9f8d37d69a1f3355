#pragma once
// containerd registry host configuration (`hosts.toml` under containerd's
// `config_path`, e.g. /etc/containerd/certs.d/<registry>/hosts.toml) that sends
// pulls through shoald's mirror. Used by `shoalctl containerd-config`.
//
// containerd tries each [host."..."] entry in order and falls back to
// `server`; to a mirror it adds `?ns=<registry>`, which is how shoald knows
// the upstream. The `_default` directory applies to every registry that has
// no directory of its own (no `server` line: containerd falls back to the
// registry itself).

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/result.h"

namespace shoal::ctl::containerd {

// One registry to configure: the directory name under config_path and the
// upstream `server` URL (empty for `_default`).
struct upstream {
  std::string dir;     // "registry.example.com", "127.0.0.1:5000", "_default"
  std::string server;  // "https://registry.example.com"; "" for _default
};

// Parses a --registry value: `_default`, `HOST[:PORT]` (https), or
// `http://HOST[:PORT]` / `https://HOST[:PORT]` for an explicit scheme.
// `docker.io` gets containerd's server for Docker Hub (registry-1.docker.io).
// Refuses anything that is not a host name, IPv4 or [IPv6] address with an
// optional port, so a value never escapes config_path.
result<upstream> parse_registry(std::string_view arg);

// Validates a --mirror value: `http(s)://HOST:PORT` (no path, query or
// credentials); returns it without a trailing slash.
result<std::string> parse_mirror(std::string_view url);

// The hosts.toml text for one upstream through the mirror. Deterministic
// (no timestamps), so an unchanged configuration produces identical bytes.
std::string hosts_toml(const upstream& u, const std::string& mirror);

enum class outcome { created, replaced, unchanged };

struct write_result {
  outcome what = outcome::unchanged;
  std::filesystem::path path;    // <config_path>/<dir>/hosts.toml
  std::filesystem::path backup;  // where the previous file went (replaced only)
};

// Writes `content` to <config_path>/<dir>/hosts.toml atomically (temporary
// file in the same directory, fsync, rename). An identical file is left
// alone (no write, no backup); a different one is first renamed to
// hosts.toml.bak-<UTC time of `now`> (with -N appended if that exists).
result<write_result> write_hosts_toml(const std::filesystem::path& config_path,
                                      const std::string& dir, const std::string& content,
                                      std::chrono::system_clock::time_point now);

}  // namespace shoal::ctl::containerd
