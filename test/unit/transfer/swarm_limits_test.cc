// How many piece requests a child keeps open to one parent
// (transfer::requests_per_parent): one each when it has several parents, so a
// parent's uplink carries fewer pieces at once and each arrives sooner; and
// which parents it asks last (transfer::parent_last_resort), and which of a
// piece's holders first (transfer::holder_rank, transfer::parent_upload_load);
// and how many of its max_in_flight requests are in use (transfer::fetch_slots_used).

#include <catch2/catch.hpp>

#include "daemon/transfer/swarm.h"

using shoal::transfer::fetch_slots_used;
using shoal::transfer::holder_rank;
using shoal::transfer::kUploadsFresh;
using shoal::transfer::parent_last_resort;
using shoal::transfer::parent_upload_load;
using shoal::transfer::requests_per_parent;
using shoal::transfer::sibling_relay_allowed;
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

TEST_CASE("a parent's uplink load is its latest report plus what this child asked since") {
  using std::chrono::milliseconds;
  CHECK(parent_upload_load(3, 0, milliseconds(10)) == 3);
  CHECK(parent_upload_load(3, 2, milliseconds(10)) == 5);
  CHECK(parent_upload_load(0, 1, milliseconds(0)) == 1);
  // A report that has aged (a seed's bitmap no longer changes) is unknown.
  CHECK(parent_upload_load(4, 2, kUploadsFresh) == 0);
  CHECK(parent_upload_load(4, 2, std::chrono::seconds(20)) == 0);
}

TEST_CASE("a child asks the least busy holder of a piece, the reading source last") {
  // {last resort, relays it (not whole there yet), this child's requests
  //  open to it, uplink load, random draw}
  CHECK(holder_rank{false, false, 0, 1, 9} < holder_rank{false, false, 0, 3, 0});
  // This child's own open requests weigh before the reported load.
  CHECK(holder_rank{false, false, 0, 4, 9} < holder_rank{false, false, 1, 0, 0});
  // The source reading origin loses to any other holder, however busy.
  CHECK(holder_rank{false, false, 1, 4, 9} < holder_rank{true, false, 0, 0, 0});
  // A parent holding the whole piece before one still receiving it.
  CHECK(holder_rank{false, false, 1, 4, 9} < holder_rank{false, true, 0, 0, 0});
  // But a relaying peer before the reading source.
  CHECK(holder_rank{false, true, 1, 4, 9} < holder_rank{true, false, 0, 0, 0});
  // Equal loads: the draw decides, not the host id.
  CHECK(holder_rank{false, false, 0, 2, 1} < holder_rank{false, false, 0, 2, 2});
}

TEST_CASE("a first copy from the reading source takes two of a child's request slots") {
  const auto max = swarm_options{}.max_in_flight;
  REQUIRE(max == 4);
  // From parents only: four pieces at once, each a quarter of the downlink.
  CHECK(fetch_slots_used(3, 0, 0) < max);
  CHECK(fetch_slots_used(4, 0, 0) == max);
  // Pieces waiting to be hashed and written hold memory: they count too.
  CHECK(fetch_slots_used(2, 2, 0) == max);
  // One of three from the reading source: no fourth, so it gets a third.
  CHECK(fetch_slots_used(3, 0, 1) == max);
  CHECK(fetch_slots_used(2, 0, 1) < max);
  // Two first copies at once leave room for nothing else.
  CHECK(fetch_slots_used(2, 0, 2) == max);
}

TEST_CASE("a child asks other children for pieces still arriving there, a few at a time") {
  const auto cap = swarm_options{}.max_sibling_relays;
  REQUIRE(cap == 2);
  CHECK(sibling_relay_allowed(0, cap));
  CHECK(sibling_relay_allowed(1, cap));
  // Two relays open: the other requests go to parents holding whole pieces,
  // which send at the link's rate, not at the rate a relaying parent receives.
  CHECK_FALSE(sibling_relay_allowed(2, cap));
  CHECK_FALSE(sibling_relay_allowed(3, cap));
  // A cap of 0 turns relays between children off.
  CHECK_FALSE(sibling_relay_allowed(0, 0));
}
