#include "common/log.h"

#include <catch2/catch.hpp>

TEST_CASE("init_logging accepts spdlog level names only", "[log]") {
  for (const char* level :
       {"trace", "debug", "info", "warn", "warning", "error", "critical", "off"}) {
    INFO("level: " << level);
    CHECK(shoal::init_logging(level));
  }
  CHECK_FALSE(shoal::init_logging("verbose"));
  CHECK_FALSE(shoal::init_logging(""));
  CHECK(shoal::init_logging("debug"));
  CHECK(spdlog::get_level() == spdlog::level::debug);
  CHECK(shoal::init_logging("info"));
}

TEST_CASE("logger returns one registered logger per name", "[log]") {
  auto a = shoal::logger("test_module");
  auto b = shoal::logger("test_module");
  REQUIRE(a);
  CHECK(a == b);
  CHECK(a->name() == "test_module");
  CHECK(spdlog::get("test_module") == a);
  CHECK(shoal::logger("other_module") != a);
}
