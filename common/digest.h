#pragma once
// OCI content digests. Only sha256 is accepted ("sha256:" + 64 lowercase hex);
// a validated digest's hex is safe to use as a file name.

#include <string>
#include <string_view>

#include "common/result.h"

namespace shoal {

struct digest {
  std::string hex;  // 64 lowercase hex
  std::string str() const { return "sha256:" + hex; }
  friend bool operator==(const digest&, const digest&) = default;
};

// Errors say what was wrong with the text (algorithm, length, characters).
result<digest> parse_digest(std::string_view text);
bool is_sha256_hex(std::string_view hex);

}  // namespace shoal
