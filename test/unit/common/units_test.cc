#include "common/units.h"

#include <catch2/catch.hpp>
#include <string>

TEST_CASE("parse_bytes accepts sizes with units", "[units]") {
  const std::pair<std::string, std::uint64_t> cases[] = {
      {"4096", 4096},
      {"0", 0},
      {"512B", 512},
      {"4KiB", 4096},
      {"4K", 4096},
      {"4KB", 4000},
      {"25MiB", 25ull << 20},
      {"10MB", 10'000'000},
      {"1GiB", 1ull << 30},
      {"1.5GiB", 3ull << 29},
      {"1.5G", 3ull << 29},
      {"1.5GB", 1'500'000'000},
      {"2TiB", 2ull << 40},
      {"0.5KiB", 512},
      {"25 MiB", 25ull << 20},
      {" 1GiB ", 1ull << 30},
      {"18446744073709551615", 18446744073709551615ull},
      {"15PiB", 15ull << 50},
  };
  for (const auto& [text, want] : cases) {
    INFO("input: " << text);
    auto r = shoal::parse_bytes(text);
    REQUIRE(r);
    CHECK(*r == want);
  }
}

TEST_CASE("parse_bytes errors name the input", "[units]") {
  const std::string bad[] = {"",         "abc",
                             "-1",       "5XB",
                             "1.5",      "12iB",
                             "1.2.3MiB", ".",
                             "MiB",      "99999999999999999999",
                             "20000PiB", "1.0000000001GiB",
                             "90%"};
  for (const auto& text : bad) {
    INFO("input: " << text);
    auto r = shoal::parse_bytes(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().is(shoal::errc::invalid_argument));
    CHECK_THAT(r.error().message, Catch::Contains("\"" + text + "\""));
  }
  CHECK_THAT(shoal::parse_bytes("5XB").error().message, Catch::Contains("unknown unit \"XB\""));
  CHECK_THAT(shoal::parse_bytes("-1").error().message, Catch::Contains("negative"));
}

TEST_CASE("format_bytes", "[units]") {
  CHECK(shoal::format_bytes(0) == "0 B");
  CHECK(shoal::format_bytes(1023) == "1023 B");
  CHECK(shoal::format_bytes(1024) == "1 KiB");
  CHECK(shoal::format_bytes(1536) == "1.5 KiB");
  CHECK(shoal::format_bytes(25ull << 20) == "25 MiB");
  CHECK(shoal::format_bytes((1ull << 20) - 1) == "1 MiB");
  CHECK(shoal::format_bytes(3ull << 29) == "1.5 GiB");
}
