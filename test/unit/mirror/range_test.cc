#include <catch2/catch.hpp>

#include "daemon/mirror/range.h"

using namespace shoal::mirror;

TEST_CASE("range: single ranges within the blob") {
  byte_range r;
  REQUIRE(parse_range("bytes=0-0", 1000, r) == range_result::ok);
  CHECK(r.first == 0);
  CHECK(r.last == 0);
  REQUIRE(parse_range("bytes=100-", 1000, r) == range_result::ok);
  CHECK(r.first == 100);
  CHECK(r.last == 999);
  REQUIRE(parse_range("bytes=990-5000", 1000, r) == range_result::ok);
  CHECK(r.last == 999);
  REQUIRE(parse_range("bytes=-10", 1000, r) == range_result::ok);
  CHECK(r.first == 990);
  REQUIRE(parse_range("bytes=-5000", 1000, r) == range_result::ok);
  CHECK(r.first == 0);
}

TEST_CASE("range: past the end is unsatisfiable") {
  byte_range r;
  CHECK(parse_range("bytes=1000-", 1000, r) == range_result::unsatisfiable);
  CHECK(parse_range("bytes=5000-6000", 1000, r) == range_result::unsatisfiable);
  CHECK(parse_range("bytes=-0", 1000, r) == range_result::unsatisfiable);
  CHECK(parse_range("bytes=0-", 0, r) == range_result::unsatisfiable);
}

TEST_CASE("range: malformed or multiple ranges are ignored") {
  byte_range r;
  CHECK(parse_range("", 1000, r) == range_result::none);
  CHECK(parse_range("items=0-1", 1000, r) == range_result::none);
  CHECK(parse_range("bytes=0-1,5-6", 1000, r) == range_result::none);
  CHECK(parse_range("bytes=5-1", 1000, r) == range_result::none);
  CHECK(parse_range("bytes=a-b", 1000, r) == range_result::none);
  CHECK(parse_range("bytes=-", 1000, r) == range_result::none);
  CHECK(parse_range("bytes=99999999999999999999999-", 1000, r) == range_result::none);
}
