#pragma once
// HTTP Range requests on blobs (RFC 9110 §14).

#include <cstdint>
#include <string_view>

namespace shoal::mirror {

struct byte_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0;  // inclusive
};

enum class range_result { none, ok, unsatisfiable };

// Parses a single "bytes=" range against a blob of `size` bytes. Several
// ranges, other units or malformed values give `none` (the whole blob is
// sent, as the RFC allows); a range starting past the end is unsatisfiable.
range_result parse_range(std::string_view header, std::uint64_t size, byte_range& out);

}  // namespace shoal::mirror
