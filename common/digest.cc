#include "common/digest.h"

#include <algorithm>

namespace shoal {
namespace {

constexpr std::string_view kPrefix = "sha256:";
constexpr std::size_t kHexLength = 64;

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// Digests come from clients; cap what is echoed back so an error stays one line.
std::string quoted(std::string_view text) {
  constexpr std::size_t kMax = 80;
  std::string out = "\"";
  out += text.substr(0, kMax);
  if (text.size() > kMax) out += "...";
  out += "\"";
  return out;
}

}  // namespace

bool is_sha256_hex(std::string_view hex) {
  return hex.size() == kHexLength && std::all_of(hex.begin(), hex.end(), is_lower_hex);
}

result<digest> parse_digest(std::string_view text) {
  if (text.empty()) return error(errc::invalid_argument, "empty digest (expected sha256:<64 hex>)");
  auto colon = text.find(':');
  if (colon == std::string_view::npos) {
    return error(errc::invalid_argument,
                 "digest " + quoted(text) + " has no algorithm (expected sha256:<64 hex>)");
  }
  if (text.substr(0, colon + 1) != kPrefix) {
    return error(errc::invalid_argument, "digest " + quoted(text) + " uses algorithm \"" +
                                             std::string(text.substr(0, colon)) +
                                             "\"; only sha256 is supported");
  }
  std::string_view hex = text.substr(kPrefix.size());
  if (hex.size() != kHexLength) {
    return error(errc::invalid_argument, "digest " + quoted(text) + " has " +
                                             std::to_string(hex.size()) +
                                             " hex characters; sha256 needs 64");
  }
  if (!std::all_of(hex.begin(), hex.end(), is_lower_hex)) {
    return error(errc::invalid_argument,
                 "digest " + quoted(text) + " must be lowercase hex [0-9a-f] after \"sha256:\"");
  }
  return digest{std::string(hex)};
}

}  // namespace shoal
