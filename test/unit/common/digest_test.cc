#include "common/digest.h"

#include <catch2/catch.hpp>
#include <string>

namespace {

const std::string kHex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

}  // namespace

TEST_CASE("parse_digest accepts sha256 with 64 lowercase hex", "[digest]") {
  auto d = shoal::parse_digest("sha256:" + kHex);
  REQUIRE(d);
  CHECK(d->hex == kHex);
  CHECK(d->str() == "sha256:" + kHex);
  CHECK(shoal::is_sha256_hex(kHex));
}

TEST_CASE("parse_digest rejects malformed digests", "[digest]") {
  std::string upper = kHex;
  upper[0] = 'B';
  const std::string bad[] = {
      "",
      "sha256:../../etc",
      "sha256:../../etc/passwd" + std::string(41, 'a'),
      "sha256:" + upper,
      "sha256:" + kHex.substr(1),
      "sha256:" + kHex + "0",
      "sha256:",
      "md5:d41d8cd98f00b204e9800998ecf8427e",
      "sha512:" + kHex + kHex,
      kHex,
      "SHA256:" + kHex,
      "sha256:" + kHex.substr(0, 63) + "g",
  };
  for (const auto& text : bad) {
    INFO("input: " << text);
    auto d = shoal::parse_digest(text);
    REQUIRE_FALSE(d);
    CHECK(d.error().is(shoal::errc::invalid_argument));
  }
}

TEST_CASE("parse_digest errors say what was wrong", "[digest]") {
  CHECK_THAT(shoal::parse_digest("md5:abc").error().message,
             Catch::Contains("md5") && Catch::Contains("only sha256"));
  CHECK_THAT(shoal::parse_digest("sha256:abc").error().message, Catch::Contains("64"));
  CHECK_THAT(shoal::parse_digest("").error().message, Catch::Contains("empty"));
}

TEST_CASE("is_sha256_hex", "[digest]") {
  CHECK_FALSE(shoal::is_sha256_hex(""));
  CHECK_FALSE(shoal::is_sha256_hex(std::string(64, 'A')));
  CHECK_FALSE(shoal::is_sha256_hex(std::string(63, 'a')));
  CHECK_FALSE(shoal::is_sha256_hex(std::string(62, 'a') + "/."));
  CHECK(shoal::is_sha256_hex(std::string(64, '0')));
}
