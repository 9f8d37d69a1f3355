#include "common/units.h"

#include <array>
#include <cctype>
#include <cstdio>
#include <limits>

namespace shoal {
namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
constexpr std::size_t kMaxFractionDigits = 9;

error bad_size(std::string_view text, const std::string& why) {
  return error(errc::invalid_argument,
               "invalid size \"" + std::string(text) + "\": " + why +
                   " (use a whole number of bytes or a number with a unit, e.g. 4096, 25MiB, "
                   "1.5GiB, 10MB)");
}

char upper(char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); }

// The multiplier for a unit suffix, or 0 when the suffix is not a unit.
// "K", "KiB" -> 1024; "KB" -> 1000; "" or "B" -> 1.
std::uint64_t unit_multiplier(std::string_view unit) {
  if (unit.empty() || unit == "B" || unit == "b") return 1;
  constexpr std::string_view kPrefixes = "KMGTP";
  auto p = kPrefixes.find(upper(unit.front()));
  if (p == std::string_view::npos) return 0;
  std::string_view rest = unit.substr(1);
  std::uint64_t base;
  if (rest.empty() || rest == "iB" || rest == "ib" || rest == "IB") {
    base = 1024;
  } else if (rest == "B" || rest == "b") {
    base = 1000;
  } else {
    return 0;
  }
  std::uint64_t m = 1;
  for (std::size_t i = 0; i <= p; ++i) m *= base;
  return m;
}

}  // namespace

result<std::uint64_t> parse_bytes(std::string_view text) {
  std::string_view s = text;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  if (s.empty()) return bad_size(text, "it is empty");
  if (s.front() == '-') return bad_size(text, "sizes cannot be negative");

  std::size_t i = 0;
  std::uint64_t whole = 0;
  bool any_digit = false;
  for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) {
    auto d = static_cast<std::uint64_t>(s[i] - '0');
    if (whole > (kMax - d) / 10) return bad_size(text, "the number is too large");
    whole = whole * 10 + d;
    any_digit = true;
  }
  std::uint64_t fraction = 0;
  std::uint64_t fraction_scale = 1;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t digits = 0;
    for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) {
      if (++digits > kMaxFractionDigits) return bad_size(text, "too many decimal places");
      fraction = fraction * 10 + static_cast<std::uint64_t>(s[i] - '0');
      fraction_scale *= 10;
      any_digit = true;
    }
  }
  if (!any_digit) return bad_size(text, "it does not start with a number");

  std::string_view unit = s.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  std::uint64_t mult = unit_multiplier(unit);
  if (mult == 0) {
    return bad_size(text,
                    "unknown unit \"" + std::string(unit) +
                        "\" (known: B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB, KB, MB, GB, TB, PB)");
  }

  if (mult == 1 && fraction != 0) return bad_size(text, "bytes must be a whole number");
  if (whole > kMax / mult) return bad_size(text, "the size does not fit in 64 bits");
  std::uint64_t bytes = whole * mult;
  // fraction * mult / scale without overflow: fraction < scale <= 1e9, so the
  // first product stays below mult and the second below 1e18. Rounds down.
  std::uint64_t part =
      (mult / fraction_scale) * fraction + (mult % fraction_scale) * fraction / fraction_scale;
  if (bytes > kMax - part) return bad_size(text, "the size does not fit in 64 bits");
  return bytes + part;
}

std::string format_bytes(std::uint64_t bytes) {
  constexpr std::array<const char*, 7> kUnits = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  std::size_t u = 0;
  double v = static_cast<double>(bytes);
  // Move up while the value would print as 1024.0 or more after rounding.
  while (v >= 1023.95 && u + 1 < kUnits.size()) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  std::string num = buf;
  if (num.size() > 2 && num.compare(num.size() - 2, 2, ".0") == 0) num.resize(num.size() - 2);
  return num + " " + kUnits[u];
}

}  // namespace shoal
