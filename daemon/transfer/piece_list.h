#pragma once
// The X-Shoal-Receiving header of a parent's /bitmap answer: the pieces it is
// receiving now, which it relays to a child as they arrive
// (partial_piece.h). Comma-separated decimal indices, ascending.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shoal::transfer {

// At most this many indices are accepted: a daemon receives a few pieces at
// once per task (its requests in flight, the source's origin streams).
inline constexpr std::size_t kMaxPieceList = 256;

std::string format_piece_list(const std::vector<std::uint32_t>& pieces);
// Parses a list from a parent. Every index must be below `piece_count`;
// empty text is an empty list. Errors name what was wrong.
result<std::vector<std::uint32_t>> parse_piece_list(std::string_view text,
                                                    std::uint32_t piece_count);

}  // namespace shoal::transfer
