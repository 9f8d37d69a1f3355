#include "daemon/source/bearer.h"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cctype>

namespace shoal::source {
namespace {

constexpr std::size_t kMaxTokens = 4096;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

struct challenge {
  std::string scheme;
  std::vector<std::pair<std::string, std::string>> params;
};

// RFC 7235 challenges: `scheme param=value, param="quoted", scheme2 ...`.
std::vector<challenge> parse_challenges(std::string_view h) {
  std::vector<challenge> out;
  std::size_t i = 0;
  const std::size_t n = h.size();
  while (i < n) {
    while (i < n && (is_space(h[i]) || h[i] == ',')) ++i;
    if (i >= n) break;
    const std::size_t start = i;
    while (i < n && !is_space(h[i]) && h[i] != '=' && h[i] != ',') ++i;
    std::string name(h.substr(start, i - start));
    std::size_t j = i;
    while (j < n && is_space(h[j])) ++j;
    if (j < n && h[j] == '=' && !out.empty()) {
      i = j + 1;
      while (i < n && is_space(h[i])) ++i;
      std::string value;
      if (i < n && h[i] == '"') {
        ++i;
        while (i < n && h[i] != '"') {
          if (h[i] == '\\' && i + 1 < n) ++i;
          value += h[i++];
        }
        if (i < n) ++i;  // closing quote
      } else {
        const std::size_t vs = i;
        while (i < n && h[i] != ',' && !is_space(h[i])) ++i;
        value = std::string(h.substr(vs, i - vs));
      }
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      out.back().params.emplace_back(std::move(name), std::move(value));
    } else if (j < n && h[j] == '=') {
      i = j + 1;  // a parameter before any scheme: ignore it
    } else {
      out.push_back(challenge{std::move(name), {}});
      i = j;
    }
  }
  return out;
}

}  // namespace

bool has_auth_scheme(std::string_view authorization, std::string_view scheme) {
  return authorization.size() > scheme.size() && is_space(authorization[scheme.size()]) &&
         iequals(authorization.substr(0, scheme.size()), scheme);
}

std::optional<bearer_challenge> parse_bearer_challenge(std::string_view header) {
  for (const auto& c : parse_challenges(header)) {
    if (!iequals(c.scheme, "bearer")) continue;
    bearer_challenge b;
    for (const auto& [k, v] : c.params) {
      if (k == "realm")
        b.realm = v;
      else if (k == "service")
        b.service = v;
      else if (k == "scope")
        b.scope = v;
    }
    if (b.realm.empty()) return std::nullopt;
    return b;
  }
  return std::nullopt;
}

result<token_reply> parse_token_reply(std::string_view body) {
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) {
    return error(errc::upstream_error, "token reply is not a JSON object");
  }
  const auto& o = v.get_object();
  token_reply r;
  for (const char* field : {"token", "access_token"}) {
    if (const auto* t = o.if_contains(field); t && t->is_string() && !t->get_string().empty()) {
      r.token = std::string(t->get_string());
      break;
    }
  }
  if (r.token.empty()) {
    return error(errc::upstream_error, "token reply has no \"token\" or \"access_token\"");
  }
  if (const auto* e = o.if_contains("expires_in")) {
    double secs = 0;
    if (e->is_int64())
      secs = static_cast<double>(e->get_int64());
    else if (e->is_uint64())
      secs = static_cast<double>(e->get_uint64());
    else if (e->is_double())
      secs = e->get_double();
    if (secs > 0) r.expires_in = std::chrono::seconds(static_cast<long long>(std::min(secs, 1e9)));
  }
  // Tokens are opaque, but they go into a header: refuse anything that could
  // split it.
  if (std::any_of(r.token.begin(), r.token.end(),
                  [](unsigned char c) { return c < 0x21 || c == 0x7f; })) {
    return error(errc::upstream_error, "token reply has a token with control characters");
  }
  return r;
}

std::optional<std::string> token_cache::get(const std::string& authorization,
                                            const bearer_challenge& ch,
                                            clock::time_point now) const {
  const auto it = tokens_.find(make_key(authorization, ch));
  if (it == tokens_.end() || it->second.expires <= now) return std::nullopt;
  return it->second.token;
}

void token_cache::put(const std::string& authorization, const bearer_challenge& ch,
                      std::string token, std::chrono::seconds expires_in, clock::time_point now) {
  if (tokens_.size() >= kMaxTokens) {
    std::erase_if(tokens_, [&](const auto& kv) { return kv.second.expires <= now; });
    if (tokens_.size() >= kMaxTokens) tokens_.clear();
  }
  // Stop using a token a little before the server does, so a request in
  // flight does not race its expiry.
  const auto margin = std::min<std::chrono::seconds>(expires_in / 10, std::chrono::seconds(30));
  tokens_[make_key(authorization, ch)] = entry{std::move(token), now + expires_in - margin};
}

void token_cache::erase(const std::string& authorization, const bearer_challenge& ch) {
  tokens_.erase(make_key(authorization, ch));
}

}  // namespace shoal::source
