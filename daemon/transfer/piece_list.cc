#include "daemon/transfer/piece_list.h"

#include <charconv>

namespace shoal::transfer {

std::string format_piece_list(const std::vector<std::uint32_t>& pieces) {
  std::string out;
  for (auto n : pieces) {
    if (!out.empty()) out += ',';
    out += std::to_string(n);
  }
  return out;
}

result<std::vector<std::uint32_t>> parse_piece_list(std::string_view text,
                                                    std::uint32_t piece_count) {
  std::vector<std::uint32_t> out;
  if (text.empty()) return out;
  while (true) {
    if (out.size() == kMaxPieceList)
      return error(errc::invalid_argument,
                   "piece list has more than " + std::to_string(kMaxPieceList) + " entries");
    const auto comma = text.find(',');
    const auto item = text.substr(0, comma);
    std::uint32_t n = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), n);
    if (item.empty() || ec != std::errc() || p != item.data() + item.size())
      return error(errc::invalid_argument,
                   "piece list entry '" + std::string(item.substr(0, 16)) + "' is not a number");
    if (n >= piece_count)
      return error(errc::invalid_argument, "piece list entry " + std::to_string(n) +
                                               " is not below the piece count " +
                                               std::to_string(piece_count));
    out.push_back(n);
    if (comma == std::string_view::npos) return out;
    text.remove_prefix(comma + 1);
  }
}

}  // namespace shoal::transfer
