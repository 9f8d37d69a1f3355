// watermark::parse: "90%" (share of the filesystem) or a size ("100GiB", "1073741824").

#include <charconv>
#include <cmath>
#include <string>
#include <string_view>
#include <system_error>

#include "common/units.h"
#include "daemon/storage/store.h"

namespace shoal::storage {
namespace {

constexpr const char* kHint =
    " (use a share of the disk like \"90%\" or a cache size like \"100GiB\")";

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

result<watermark> watermark::parse(const std::string& text) {
  const std::string_view t = trim(text);
  if (t.empty()) return error(errc::invalid_argument, std::string("GC watermark is empty") + kHint);

  if (t.back() == '%') {
    const std::string_view num = trim(t.substr(0, t.size() - 1));
    double v = 0;
    const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
    if (num.empty() || ec != std::errc() || end != num.data() + num.size() || !std::isfinite(v) ||
        v <= 0 || v > 100) {
      return error(errc::invalid_argument,
                   "GC watermark \"" + text +
                       "\": the percentage must be a number greater than 0 and at most 100" +
                       kHint);
    }
    return watermark{kind::percent_of_disk, v};
  }

  auto bytes = parse_bytes(t);
  if (!bytes) {
    return error(errc::invalid_argument,
                 "GC watermark \"" + text + "\": " + bytes.error().message + kHint);
  }
  if (*bytes == 0) {
    return error(errc::invalid_argument,
                 "GC watermark \"" + text + "\": the size must be greater than 0" + kHint);
  }
  return watermark{kind::bytes, static_cast<double>(*bytes)};
}

}  // namespace shoal::storage
