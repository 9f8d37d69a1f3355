#pragma once
// Byte sizes as people write them: "25MiB", "1.5GB", "4096", "90%".

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace shoal {

// "512", "4KiB", "25MiB", "1GiB", "2TiB", "10MB", "1.5G" (K/M/G/T = 1000^n when
// followed by B, 1024^n with iB or alone). Errors name the input.
result<std::uint64_t> parse_bytes(std::string_view text);
// 1536 -> "1.5 KiB"
std::string format_bytes(std::uint64_t bytes);

}  // namespace shoal
