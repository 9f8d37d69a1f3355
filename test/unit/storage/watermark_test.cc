#include <catch2/catch.hpp>

#include "daemon/storage/store.h"

using shoal::errc;
using shoal::storage::watermark;

TEST_CASE("watermark parses a share of the disk") {
  auto w = watermark::parse("90%");
  REQUIRE(w.has_value());
  CHECK(w->type == watermark::kind::percent_of_disk);
  CHECK(w->value == 90);

  auto spaced = watermark::parse(" 72.5 % ");
  REQUIRE(spaced.has_value());
  CHECK(spaced->type == watermark::kind::percent_of_disk);
  CHECK(spaced->value == 72.5);

  auto full = watermark::parse("100%");
  REQUIRE(full.has_value());
  CHECK(full->value == 100);
}

TEST_CASE("watermark parses a cache size") {
  auto gib = watermark::parse("100GiB");
  REQUIRE(gib.has_value());
  CHECK(gib->type == watermark::kind::bytes);
  CHECK(gib->value == 100.0 * 1024 * 1024 * 1024);

  auto plain = watermark::parse("1073741824");
  REQUIRE(plain.has_value());
  CHECK(plain->type == watermark::kind::bytes);
  CHECK(plain->value == 1073741824.0);
}

TEST_CASE("watermark rejects bad input with a message naming it") {
  for (const char* bad :
       {"", "0%", "101%", "-5%", "abc%", "%", "nan%", "inf%", "abc", "0", "12 parsecs"}) {
    CAPTURE(bad);
    auto w = watermark::parse(bad);
    REQUIRE_FALSE(w.has_value());
    CHECK(w.error().is(errc::invalid_argument));
    CHECK_THAT(w.error().message, Catch::Contains("watermark"));
    CHECK_THAT(w.error().message, Catch::Contains("90%"));  // says what to write instead
    if (std::string(bad).size() > 1) CHECK_THAT(w.error().message, Catch::Contains(bad));
  }
}
