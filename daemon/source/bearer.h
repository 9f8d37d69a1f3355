#pragma once
// Private to daemon/source: the Docker/OCI token authentication pieces.
// https://distribution.github.io/distribution/spec/auth/token/

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/result.h"

namespace shoal::source {

// A `WWW-Authenticate: Bearer realm=..,service=..,scope=..` challenge.
struct bearer_challenge {
  std::string realm;
  std::string service;
  std::string scope;  // may hold several scopes separated by spaces

  bool operator==(const bearer_challenge&) const = default;
};

// Finds the Bearer challenge in a WWW-Authenticate value (which may list
// several challenges); nullopt when there is none or it has no realm.
std::optional<bearer_challenge> parse_bearer_challenge(std::string_view header);

// A token endpoint's answer.
struct token_reply {
  std::string token;
  std::chrono::seconds expires_in{60};
};

// Parses `{"token": .., "access_token": .., "expires_in": ..}`; `token` wins
// when both are present; expires_in defaults to 60 s.
result<token_reply> parse_token_reply(std::string_view body);

// "Basic ...", "bearer ..." -> true when the scheme matches (case-insensitive).
bool has_auth_scheme(std::string_view authorization, std::string_view scheme);

// Tokens per (client credentials, realm, service, scope), valid until they
// expire. Not thread-safe: the owner serialises access.
class token_cache {
 public:
  using clock = std::chrono::steady_clock;

  std::optional<std::string> get(const std::string& authorization, const bearer_challenge& ch,
                                 clock::time_point now) const;
  void put(const std::string& authorization, const bearer_challenge& ch, std::string token,
           std::chrono::seconds expires_in, clock::time_point now);
  void erase(const std::string& authorization, const bearer_challenge& ch);
  std::size_t size() const { return tokens_.size(); }

 private:
  using key = std::tuple<std::string, std::string, std::string, std::string>;
  struct entry {
    std::string token;
    clock::time_point expires;
  };
  static key make_key(const std::string& authorization, const bearer_challenge& ch) {
    return {authorization, ch.realm, ch.service, ch.scope};
  }
  std::map<key, entry> tokens_;
};

}  // namespace shoal::source
