#pragma once
// Private to daemon/source: which upstreams may be reached, and how (SSRF guard).
//
// An upstream is reached over https unless it is listed as insecure; then plain
// http is used and loopback/private addresses are allowed. Any other upstream
// whose resolved address is not a public unicast address is refused.

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shoal::source {

enum class address_class {
  global,       // public unicast: always allowed
  loopback,     // 127/8, ::1
  private_use,  // 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10
  link_local,   // 169.254/16, fe80::/10
  unspecified,  // 0.0.0.0/8, ::
  multicast,    // 224/4, ff00::/8
  broadcast,    // 255.255.255.255
};

// Classifies an address; IPv4-mapped IPv6 addresses are classified as IPv4.
address_class classify(const boost::asio::ip::address& addr);
// "loopback", "private", "link-local", ... for messages.
std::string_view describe(address_class c);

// A "host[:port]" split into its parts; host without brackets, port "" if absent.
struct host_port {
  std::string host;
  std::string port;
};

// Parses "host", "host:port", "[v6]" or "[v6]:port" (as in an image reference or
// an --insecure-registry entry). Host names are lower-cased.
result<host_port> parse_host_port(std::string_view text);

// "host[:port]" for messages and Host headers; IPv6 hosts get brackets.
std::string join_host_port(std::string_view host, std::string_view port);

// Where one request goes: scheme, host, effective port and request target.
struct url_target {
  std::string scheme;  // "http" or "https"
  std::string host;    // lower case, no brackets
  std::string port;    // always set ("80"/"443" by default)
  std::string target;  // origin-form: path and query

  // Value for the Host header: port omitted when it is the scheme's default.
  std::string authority() const;
  std::string str() const { return scheme + "://" + authority() + target; }
  // Same scheme, host and port: credentials may be sent to both.
  bool same_origin(const url_target& o) const {
    return scheme == o.scheme && host == o.host && port == o.port;
  }
};

// Parses an absolute http(s) URL (a token realm, a resolved Location).
result<url_target> parse_url(std::string_view text);
// Resolves a Location header value against the URL it came from.
result<url_target> resolve_location(const url_target& base, std::string_view location);

class upstream_policy {
 public:
  // Entries are "host" (any port of that host) or "host:port" (that port only).
  // Malformed entries are an error at start-up (exceptions allowed there).
  explicit upstream_policy(const std::vector<std::string>& insecure_registries);

  // True if host (with this explicit port, "" for none) is listed as insecure.
  bool is_insecure(std::string_view host, std::string_view port) const;

  // "http" for insecure-listed registries, else "https"; refuses a registry
  // that is a literal non-public address and not listed.
  result<std::string> scheme_for(std::string_view registry) const;

  // The base URL of a registry ("https://host:port", target "").
  result<url_target> registry_url(std::string_view registry) const;

  // A redirect target or token realm: plain http only to insecure-listed hosts.
  result<void> check_url(const url_target& url, std::string_view what) const;

  // After DNS resolution, before connecting: refuses non-public addresses of
  // hosts that are not listed as insecure.
  result<void> check_resolved(const url_target& url,
                              const boost::asio::ip::tcp::resolver::results_type& results) const;
  result<void> check_address(const url_target& url, const boost::asio::ip::address& addr) const;

 private:
  std::vector<host_port> insecure_;
};

}  // namespace shoal::source
