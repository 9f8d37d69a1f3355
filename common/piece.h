#pragma once
// Piece math (DESIGN §2): a task is split into fixed-length pieces.

#include <algorithm>
#include <bit>
#include <cstdint>

namespace shoal {

inline constexpr std::uint64_t kMinPieceLength = 4ull << 20;
inline constexpr std::uint64_t kMaxPieceLength = 64ull << 20;

// Next power of two of content_length / 500, clamped to [4 MiB, 64 MiB].
constexpr std::uint32_t piece_length_for(std::uint64_t content_length) {
  std::uint64_t want = std::bit_ceil(std::max<std::uint64_t>(content_length / 500, 1));
  return static_cast<std::uint32_t>(std::clamp(want, kMinPieceLength, kMaxPieceLength));
}
constexpr std::uint32_t piece_count(std::uint64_t content_length, std::uint32_t piece_length) {
  return static_cast<std::uint32_t>((content_length + piece_length - 1) / piece_length);
}
constexpr std::uint64_t piece_offset(std::uint32_t n, std::uint32_t piece_length) {
  return std::uint64_t{n} * piece_length;
}
constexpr std::uint64_t piece_size(std::uint32_t n, std::uint64_t content_length,
                                   std::uint32_t piece_length) {
  std::uint64_t off = piece_offset(n, piece_length);
  return off >= content_length ? 0 : std::min<std::uint64_t>(piece_length, content_length - off);
}

}  // namespace shoal
