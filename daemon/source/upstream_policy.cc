#include "daemon/source/upstream_policy.h"

#include <algorithm>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <cctype>
#include <charconv>
#include <stdexcept>

namespace shoal::source {
namespace {

namespace ip = boost::asio::ip;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool valid_port(std::string_view p) {
  if (p.empty() || p.size() > 5) return false;
  unsigned v = 0;
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  return ec == std::errc{} && ptr == p.data() + p.size() && v >= 1 && v <= 65535;
}

bool valid_host_name(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  return std::all_of(h.begin(), h.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == '_';
  });
}

address_class classify_v4(const ip::address_v4& a) {
  const auto b = a.to_bytes();
  if (b[0] == 127) return address_class::loopback;
  if (b[0] == 10) return address_class::private_use;
  if (b[0] == 172 && (b[1] & 0xf0) == 16) return address_class::private_use;
  if (b[0] == 192 && b[1] == 168) return address_class::private_use;
  if (b[0] == 169 && b[1] == 254) return address_class::link_local;
  if (b[0] == 0) return address_class::unspecified;
  if ((b[0] & 0xf0) == 224) return address_class::multicast;
  if (a == ip::address_v4::broadcast()) return address_class::broadcast;
  return address_class::global;
}

std::string_view default_port(std::string_view scheme) { return scheme == "https" ? "443" : "80"; }

result<url_target> from_url(const boost::urls::url_view_base& u, std::string_view text) {
  const std::string scheme = lower(u.scheme());
  if (scheme != "http" && scheme != "https") {
    return error(errc::forbidden, "URL " + std::string(text) + " is not http or https");
  }
  url_target t;
  t.scheme = scheme;
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::ipv6:
      t.host = lower(u.host_address());
      break;
    case boost::urls::host_type::name:
      t.host = lower(u.host_name());
      if (!valid_host_name(t.host)) {
        return error(errc::invalid_argument,
                     "URL " + std::string(text) + " has an invalid host name");
      }
      break;
    default:
      return error(errc::invalid_argument, "URL " + std::string(text) + " has no usable host");
  }
  if (u.has_port()) {
    t.port = std::string(u.port());
    if (!valid_port(t.port)) {
      return error(errc::invalid_argument, "URL " + std::string(text) + " has an invalid port");
    }
  } else {
    t.port = std::string(default_port(scheme));
  }
  t.target = std::string(u.encoded_target());
  if (t.target.empty() || t.target.front() != '/') t.target.insert(t.target.begin(), '/');
  return t;
}

}  // namespace

address_class classify(const ip::address& addr) {
  if (addr.is_v4()) return classify_v4(addr.to_v4());
  const auto v6 = addr.to_v6();
  if (v6.is_v4_mapped()) return classify_v4(ip::make_address_v4(ip::v4_mapped, v6));
  if (v6.is_loopback()) return address_class::loopback;
  if (v6.is_unspecified()) return address_class::unspecified;
  if (v6.is_multicast()) return address_class::multicast;
  const auto b = v6.to_bytes();
  if ((b[0] & 0xfe) == 0xfc) return address_class::private_use;                  // fc00::/7
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return address_class::link_local;   // fe80::/10
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return address_class::private_use;  // fec0::/10
  return address_class::global;
}

std::string_view describe(address_class c) {
  switch (c) {
    case address_class::global:
      return "public";
    case address_class::loopback:
      return "loopback";
    case address_class::private_use:
      return "private";
    case address_class::link_local:
      return "link-local";
    case address_class::unspecified:
      return "unspecified";
    case address_class::multicast:
      return "multicast";
    case address_class::broadcast:
      return "broadcast";
  }
  return "unknown";
}

result<host_port> parse_host_port(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return error(errc::invalid_argument,
                 "registry \"" + std::string(text) + "\" is not host[:port]: " + std::string(why));
  };
  host_port hp;
  std::string_view rest;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ']'");
    const std::string_view inner = text.substr(1, close - 1);
    boost::system::error_code ec;
    const auto a = ip::make_address_v6(std::string(inner), ec);
    if (ec) return bad("invalid IPv6 address");
    hp.host = a.to_string();
    rest = text.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return bad("unexpected text after ']'");
  } else {
    const auto colon = text.find(':');
    hp.host = lower(text.substr(0, colon));
    if (!valid_host_name(hp.host)) return bad("invalid host name");
    if (colon != std::string_view::npos) rest = text.substr(colon);
  }
  if (!rest.empty()) {
    hp.port = std::string(rest.substr(1));
    if (!valid_port(hp.port)) return bad("invalid port");
  }
  return hp;
}

std::string join_host_port(std::string_view host, std::string_view port) {
  std::string out;
  if (host.find(':') != std::string_view::npos) {
    out = "[" + std::string(host) + "]";
  } else {
    out = std::string(host);
  }
  if (!port.empty()) out += ":" + std::string(port);
  return out;
}

std::string url_target::authority() const {
  return join_host_port(host, port == default_port(scheme) ? std::string_view{} : port);
}

result<url_target> parse_url(std::string_view text) {
  auto u = boost::urls::parse_uri(text);
  if (!u) {
    return error(errc::invalid_argument,
                 "\"" + std::string(text) + "\" is not an absolute URL: " + u.error().message());
  }
  return from_url(*u, text);
}

result<url_target> resolve_location(const url_target& base, std::string_view location) {
  auto ref = boost::urls::parse_uri_reference(location);
  if (!ref) {
    return error(errc::upstream_error, "redirect Location \"" + std::string(location) + "\" from " +
                                           base.str() + " is not a URL");
  }
  const std::string base_text = base.str();  // the url_view below points into it
  auto b = boost::urls::parse_absolute_uri(base_text);
  if (!b) return error(errc::upstream_error, "cannot resolve a redirect from " + base.str());
  boost::urls::url dest;
  if (auto rv = boost::urls::resolve(*b, *ref, dest); !rv) {
    return error(errc::upstream_error, "redirect Location \"" + std::string(location) + "\" from " +
                                           base.str() + " cannot be resolved");
  }
  dest.remove_fragment();
  return from_url(dest, dest.buffer());
}

upstream_policy::upstream_policy(const std::vector<std::string>& insecure_registries) {
  for (const auto& entry : insecure_registries) {
    auto hp = parse_host_port(entry);
    if (!hp) {
      throw std::invalid_argument("--insecure-registry: " + hp.error().message);
    }
    insecure_.push_back(std::move(*hp));
  }
}

bool upstream_policy::is_insecure(std::string_view host, std::string_view port) const {
  const std::string h = lower(host);
  return std::any_of(insecure_.begin(), insecure_.end(), [&](const host_port& e) {
    return e.host == h && (e.port.empty() || e.port == port);
  });
}

result<std::string> upstream_policy::scheme_for(std::string_view registry) const {
  auto hp = parse_host_port(registry);
  if (!hp) return std::move(hp).error();
  if (is_insecure(hp->host, hp->port)) return std::string("http");
  boost::system::error_code ec;
  const auto addr = ip::make_address(hp->host, ec);
  if (!ec) {
    const auto c = classify(addr);
    if (c != address_class::global) {
      return error(errc::forbidden, "upstream " + std::string(registry) + " is a " +
                                        std::string(describe(c)) + " address; list it with " +
                                        "--insecure-registry " + std::string(registry) +
                                        " if it is trusted");
    }
  }
  return std::string("https");
}

result<url_target> upstream_policy::registry_url(std::string_view registry) const {
  auto scheme = scheme_for(registry);
  if (!scheme) return std::move(scheme).error();
  auto hp = parse_host_port(registry);
  url_target t;
  t.scheme = *scheme;
  t.host = hp->host;
  t.port = hp->port.empty() ? std::string(default_port(t.scheme)) : hp->port;
  return t;
}

result<void> upstream_policy::check_url(const url_target& url, std::string_view what) const {
  if (is_insecure(url.host, url.port) || url.scheme == "https") return ok();
  return error(errc::forbidden, std::string(what) + " " + url.scheme + "://" + url.authority() +
                                    " is plain http and " + url.authority() +
                                    " is not an insecure registry; list it with "
                                    "--insecure-registry " +
                                    url.authority() + " if it is trusted");
}

result<void> upstream_policy::check_address(const url_target& url, const ip::address& addr) const {
  if (is_insecure(url.host, url.port)) return ok();
  const auto c = classify(addr);
  if (c == address_class::global) return ok();
  return error(errc::forbidden, "upstream " + url.authority() + " resolves to " +
                                    std::string(describe(c)) + " address " + addr.to_string() +
                                    "; list it with --insecure-registry " + url.authority() +
                                    " if it is trusted");
}

result<void> upstream_policy::check_resolved(const url_target& url,
                                             const ip::tcp::resolver::results_type& results) const {
  // Every address is checked, not only the one we would connect to: a name that
  // mixes public and private addresses is refused as a whole.
  for (const auto& entry : results) {
    if (auto r = check_address(url, entry.endpoint().address()); !r) return r;
  }
  return ok();
}

}  // namespace shoal::source
