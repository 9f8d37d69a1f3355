#include "common/reference.h"

#include <algorithm>

#include "common/digest.h"

namespace shoal {
namespace {

constexpr std::size_t kMaxRepositoryLength = 255;
constexpr std::size_t kMaxTagLength = 128;
constexpr std::string_view kDockerHub = "docker.io";
constexpr std::string_view kDockerHubLegacy = "index.docker.io";
constexpr std::string_view kDockerHubHost = "registry-1.docker.io";

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_word(char c) { return is_alnum(c) || c == '_'; }

// path-component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool valid_path_component(std::string_view c) {
  std::size_t i = 0;
  const std::size_t n = c.size();
  auto alnum_run = [&] {
    std::size_t start = i;
    while (i < n && is_lower_alnum(c[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < n) {
    if (c[i] == '.') {
      ++i;
    } else if (c[i] == '_') {
      ++i;
      if (i < n && c[i] == '_') ++i;
    } else if (c[i] == '-') {
      while (i < n && c[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// domain-component: [a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
bool valid_domain_component(std::string_view c) {
  if (c.empty() || !is_alnum(c.front()) || !is_alnum(c.back())) return false;
  return std::all_of(c.begin(), c.end(), [](char ch) { return is_alnum(ch) || ch == '-'; });
}

// host [':' port], where host is a domain name, an IPv4 address (which the
// domain-name rule already covers) or a bracketed IPv6 address.
bool valid_domain(std::string_view d) {
  std::string_view host = d;
  std::string_view port;
  if (!d.empty() && d.front() == '[') {
    auto close = d.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    std::string_view v6 = d.substr(1, close - 1);
    bool ok = std::all_of(v6.begin(), v6.end(), [](char ch) {
      return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') || ch == ':';
    });
    if (!ok) return false;
    std::string_view rest = d.substr(close + 1);
    if (rest.empty()) return true;
    if (rest.front() != ':') return false;
    port = rest.substr(1);
    if (port.empty()) return false;
  } else {
    auto colon = d.find(':');
    if (colon != std::string_view::npos) {
      host = d.substr(0, colon);
      port = d.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (host.empty()) return false;
    std::size_t start = 0;
    while (true) {
      auto dot = host.find('.', start);
      if (!valid_domain_component(host.substr(start, dot - start))) return false;
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  return std::all_of(port.begin(), port.end(), is_digit);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

error bad_reference(std::string_view text, const std::string& why) {
  return error(errc::invalid_argument,
               "invalid image reference \"" + std::string(text) + "\": " + why +
                   " (expected host[:port]/repository[:tag][@sha256:<hex>])");
}

}  // namespace

bool valid_repository(std::string_view name) {
  if (name.empty() || name.size() > kMaxRepositoryLength) return false;
  std::size_t start = 0;
  while (true) {
    auto slash = name.find('/', start);
    if (!valid_path_component(name.substr(start, slash - start))) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > kMaxTagLength || !is_word(tag.front())) return false;
  return std::all_of(tag.begin(), tag.end(),
                     [](char c) { return is_word(c) || c == '.' || c == '-'; });
}

std::string reference::str() const {
  std::string out = registry + "/" + repository;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

result<reference> parse_reference(std::string_view text) {
  if (text.empty()) return bad_reference(text, "it is empty");
  reference ref;

  std::string_view name = text;
  if (auto at = text.find('@'); at != std::string_view::npos) {
    auto d = parse_digest(text.substr(at + 1));
    if (!d) return bad_reference(text, d.error().message);
    ref.digest = d->str();
    name = text.substr(0, at);
  }

  // A ':' after the last '/' starts the tag; earlier ones belong to host:port.
  auto last_slash = name.rfind('/');
  auto tag_colon = name.rfind(':');
  if (tag_colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || tag_colon > last_slash)) {
    std::string_view tag = name.substr(tag_colon + 1);
    if (!valid_tag(tag)) {
      return bad_reference(
          text, "tag \"" + std::string(tag) + "\" must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
    }
    ref.tag = std::string(tag);
    name = name.substr(0, tag_colon);
  }

  // Docker's rule: the first component is a registry host only if it looks like
  // one (has '.' or ':', or is "localhost", or has upper case letters).
  std::string_view remote = name;
  auto first_slash = name.find('/');
  if (first_slash != std::string_view::npos) {
    std::string_view first = name.substr(0, first_slash);
    bool is_host =
        first.find_first_of(".:") != std::string_view::npos || first == "localhost" ||
        std::any_of(first.begin(), first.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
    if (is_host) {
      if (!valid_domain(first)) {
        return bad_reference(text, "registry host \"" + std::string(first) + "\" is not valid");
      }
      ref.registry = std::string(first);
      remote = name.substr(first_slash + 1);
    }
  }
  if (ref.registry.empty()) ref.registry = std::string(kDockerHub);
  ref.registry = canonical_registry_host(ref.registry);
  // Single-component names on Docker Hub live under "library/", whichever
  // spelling of the host was used.
  bool docker_hub = ref.registry == kDockerHubHost;
  if (docker_hub && !remote.empty() && remote.find('/') == std::string_view::npos) {
    ref.repository = "library/" + std::string(remote);
  } else {
    ref.repository = std::string(remote);
  }

  if (ref.repository.empty()) return bad_reference(text, "the repository name is empty");
  if (!valid_repository(ref.repository)) {
    bool upper = std::any_of(ref.repository.begin(), ref.repository.end(),
                             [](char c) { return c >= 'A' && c <= 'Z'; });
    if (upper) return bad_reference(text, "repository name must be lowercase");
    if (ref.repository.size() > kMaxRepositoryLength) {
      return bad_reference(text, "repository name is longer than 255 characters");
    }
    return bad_reference(text, "repository \"" + ref.repository +
                                   "\" must be '/'-separated components of [a-z0-9] joined by "
                                   "'.', '_', '__' or '-'");
  }
  return ref;
}

std::string canonical_registry_host(std::string_view host) {
  if (iequals(host, kDockerHub) || iequals(host, kDockerHubLegacy)) {
    return std::string(kDockerHubHost);
  }
  return std::string(host);
}

}  // namespace shoal
