#include "daemon/mirror/range.h"

#include <algorithm>
#include <charconv>
#include <string_view>

namespace shoal::mirror {

range_result parse_range(std::string_view h, std::uint64_t size, byte_range& out) {
  constexpr std::string_view prefix = "bytes=";
  if (h.substr(0, prefix.size()) != prefix) return range_result::none;
  h.remove_prefix(prefix.size());
  if (h.find(',') != std::string_view::npos) return range_result::none;
  auto dash = h.find('-');
  if (dash == std::string_view::npos) return range_result::none;
  auto num = [](std::string_view s, std::uint64_t& v) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return !s.empty() && ec == std::errc() && p == s.data() + s.size();
  };
  std::string_view a = h.substr(0, dash), b = h.substr(dash + 1);
  std::uint64_t x = 0, y = 0;
  if (a.empty()) {  // suffix form: the last y bytes
    if (!num(b, y)) return range_result::none;
    if (y == 0 || size == 0) return range_result::unsatisfiable;
    out = {size - std::min(y, size), size - 1};
    return range_result::ok;
  }
  if (!num(a, x)) return range_result::none;
  if (b.empty()) {
    y = size ? size - 1 : 0;
  } else if (!num(b, y) || y < x) {
    return range_result::none;
  }
  if (x >= size) return range_result::unsatisfiable;
  out = {x, std::min(y, size - 1)};
  return range_result::ok;
}

}  // namespace shoal::mirror
