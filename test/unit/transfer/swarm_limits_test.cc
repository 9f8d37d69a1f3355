// How many piece requests a child keeps open to one parent
// (transfer::requests_per_parent): one each when it has several parents, so a
// parent's uplink carries fewer pieces at once and each arrives sooner; and
// which parents it asks last (transfer::parent_last_resort).

#include <catch2/catch.hpp>

#include "daemon/transfer/swarm.h"

using shoal::transfer::parent_last_resort;
using shoal::transfer::requests_per_parent;
using shoal::transfer::swarm_options;

TEST_CASE("a child with several parents asks each for one piece at a time") {
  const auto only = swarm_options{}.per_parent;
  for (std::size_t parents : {2u, 3u, 4u, 8u}) CHECK(requests_per_parent(parents, only) == 1);
}

TEST_CASE("a child's only parent gets two requests, so its link does not idle between pieces") {
  CHECK(swarm_options{}.per_parent == 2);
  CHECK(requests_per_parent(1, swarm_options{}.per_parent) == 2);
  CHECK(requests_per_parent(1, 3) == 3);
}

TEST_CASE("the source is a child's last resort only while it reads origin") {
  CHECK(parent_last_resort(true, false));  // reading: its uplink carries every new byte
  // Holding every piece (done reading, or a seed): a parent like any other.
  CHECK_FALSE(parent_last_resort(true, true));
  CHECK_FALSE(parent_last_resort(false, true));
  CHECK_FALSE(parent_last_resort(false, false));
}
