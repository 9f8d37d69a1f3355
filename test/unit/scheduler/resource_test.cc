#include <catch2/catch.hpp>
#include <chrono>

#include "scheduler/resource/bitmap.h"
#include "scheduler/resource/clock.h"
#include "scheduler/resource/registry.h"
#include "test/unit/scheduler/harness.h"

using namespace shoal::scheduler;
namespace v1 = shoal::v1;
using namespace std::chrono_literals;
using shoal::scheduler::test::sha;

TEST_CASE("bitmap wire encoding is LSB first per byte", "[scheduler][resource]") {
  bitmap b(10);
  b.set(0);
  b.set(3);
  b.set(9);
  CHECK(b.count() == 3);
  CHECK(b.to_bytes() == std::string("\x09\x02", 2));
  auto back = bitmap::from_bytes(std::string("\x09\x02", 2), 10);
  REQUIRE(back);
  CHECK(*back == b);
}

TEST_CASE("bitmap decoding is lenient on short input and strict on long input",
          "[scheduler][resource]") {
  auto shorter = bitmap::from_bytes(std::string("\xff", 1), 20);
  REQUIRE(shorter);
  CHECK(shorter->count() == 8);
  CHECK_FALSE(shorter->test(8));

  // Bits past the last piece in the last byte are ignored.
  auto trailing = bitmap::from_bytes(std::string("\xff\xff", 2), 10);
  REQUIRE(trailing);
  CHECK(trailing->count() == 10);
  CHECK(trailing->all());

  auto too_long = bitmap::from_bytes(std::string(3, '\0'), 10);
  REQUIRE_FALSE(too_long);
  CHECK(too_long.error().is(shoal::errc::invalid_argument));
}

TEST_CASE("bitmap set algebra", "[scheduler][resource]") {
  bitmap a(130), b(130);
  for (std::uint32_t i = 0; i < 130; i += 2) a.set(i);
  b.set(0);
  b.set(1);
  b.set(129);
  CHECK(a.count() == 65);
  CHECK(a.count_and_not(b) == 64);
  CHECK(b.count_and_not(a) == 2);
  bitmap inv = a.inverted();
  CHECK(inv.count() == 65);
  CHECK(inv.test(129));
  CHECK_FALSE(inv.test(128));
  a.merge(b);
  CHECK(a.count() == 67);
  CHECK(b.indices() == std::vector<std::uint32_t>{0, 1, 129});
  CHECK(bitmap(3).missing() == std::vector<std::uint32_t>{0, 1, 2});
  a.reset(0);
  a.reset(0);
  CHECK(a.count() == 66);
  a.set(500);  // out of range: ignored
  CHECK(a.count() == 66);
}

TEST_CASE("task records digests first-report-wins and detects conflicts", "[scheduler][resource]") {
  manual_clock clk;
  task t(task_id(std::string(64, 'e')), 10 * 4096 + 100, 4096, {}, clk.now());
  CHECK(t.piece_count() == 11);
  CHECK(t.piece_bytes(10) == 100);
  CHECK(t.piece_bytes(0) == 4096);
  CHECK(t.record_digest(3, sha(3)) == digest_update::added);
  CHECK(t.record_digest(3, sha(3)) == digest_update::same);
  CHECK(t.record_digest(3, sha(3, 'b')) == digest_update::conflict);
  CHECK(t.digest(3) == sha(3));
  CHECK(t.digest_known(3));
  CHECK_FALSE(t.digest_known(4));
  CHECK(t.known().count() == 1);
  CHECK_FALSE(t.all_digests_known());
}

TEST_CASE("task state machine: running to sealed or poisoned, both final", "[scheduler][resource]") {
  manual_clock clk;
  task a(task_id("a"), 100, 10, {}, clk.now());
  CHECK(a.state() == task_state::running);
  CHECK(a.seal());
  CHECK_FALSE(a.seal());
  CHECK_FALSE(a.poison());
  CHECK(a.state() == task_state::sealed);

  task b(task_id("b"), 100, 10, {}, clk.now());
  CHECK(b.poison());
  CHECK_FALSE(b.seal());
  CHECK(b.state() == task_state::poisoned);
  CHECK(to_string(b.state()) == "poisoned");
}

TEST_CASE("peer state machine and failure window", "[scheduler][resource]") {
  manual_clock clk;
  peer p(host_id("h"), task_id("t"), stream_id{1}, 1, 4, clk.now());
  CHECK(p.state == peer_state::running);
  CHECK(p.needs_pieces());
  CHECK(p.mark_done());
  CHECK_FALSE(p.mark_done());
  CHECK_FALSE(p.needs_pieces());
  CHECK(p.live());
  CHECK(p.mark_failed());
  CHECK_FALSE(p.mark_failed());
  CHECK_FALSE(p.live());
  CHECK(to_string(p.state) == "failed");

  peer q(host_id("q"), task_id("t"), stream_id{2}, 2, 4, clk.now());
  q.record_failure(clk.now(), 60s);
  clk.advance(30s);
  q.record_failure(clk.now(), 60s);
  CHECK(q.recent_failures(clk.now(), 60s) == 2);
  clk.advance(31s);
  CHECK(q.recent_failures(clk.now(), 60s) == 1);
  clk.advance(30s);
  CHECK(q.recent_failures(clk.now(), 60s) == 0);
}

TEST_CASE("registry links peers to streams, hosts and parents", "[scheduler][resource]") {
  manual_clock clk;
  registry reg;
  v1::Host h;
  h.set_id("h1");
  h.set_peer_addr("10.0.0.1:7401");
  reg.announce(h, clk.now());
  reg.ensure_host(host_id("h2"), clk.now());
  CHECK(reg.find_host(host_id("h1"))->can_serve());
  CHECK_FALSE(reg.find_host(host_id("h2"))->can_serve());
  CHECK_FALSE(reg.find_host(host_id("h2"))->announced);

  task& t = reg.create_task(task_id("t"), 100, 10, {}, clk.now());
  peer& p1 = reg.add_peer(t, host_id("h1"), stream_id{7}, clk.now());
  peer& p2 = reg.add_peer(t, host_id("h2"), stream_id{8}, clk.now());
  CHECK(p1.seq < p2.seq);
  CHECK(reg.peer_count() == 2);
  auto ref = reg.find_by_stream(stream_id{8});
  REQUIRE(ref);
  CHECK(ref->p->host == host_id("h2"));
  CHECK(reg.find_host(host_id("h1"))->tasks.contains(task_id("t")));

  t.set_parents(p2, {host_id("h1")});
  CHECK(p1.children == 1);
  t.set_parents(p2, {});
  CHECK(p1.children == 0);
  t.set_parents(p2, {host_id("h1")});
  // A parent kept across a re-score is counted once, and stays indexed.
  t.set_parents(p2, {host_id("h1"), host_id("gone")});
  t.set_parents(p2, {host_id("gone"), host_id("h1")});
  CHECK(p1.children == 1);
  CHECK(t.children_of(host_id("h1")) == std::vector<host_id>{host_id("h2")});
  CHECK(t.children_of(host_id("gone")) == std::vector<host_id>{host_id("h2")});
  t.set_parents(p2, {host_id("h1")});
  CHECK(p1.children == 1);
  CHECK(t.children_of(host_id("gone")).empty());

  // Removing the child releases its parent's slot.
  reg.erase_peer(t, host_id("h2"));
  CHECK(p1.children == 0);
  CHECK_FALSE(reg.find_by_stream(stream_id{8}));
  CHECK(reg.find_host(host_id("h2"))->tasks.empty());

  reg.erase_task(task_id("t"));
  CHECK(reg.peer_count() == 0);
  CHECK(reg.find_host(host_id("h1"))->tasks.empty());
}

TEST_CASE("registry expires hosts by last heartbeat", "[scheduler][resource]") {
  manual_clock clk;
  registry reg;
  v1::Host h;
  h.set_id("old");
  reg.announce(h, clk.now());
  clk.advance(20s);
  h.set_id("new");
  reg.announce(h, clk.now());
  clk.advance(11s);
  CHECK(reg.expired_hosts(clk.now(), 30s) == std::vector<host_id>{host_id("old")});
  h.set_id("old");
  reg.announce(h, clk.now());
  CHECK(reg.expired_hosts(clk.now(), 30s).empty());
}

TEST_CASE("host free capacity treats a zero limit as large", "[scheduler][resource]") {
  host h;
  CHECK(h.free_upload() == kUnlimitedRate);
  h.info.set_upload_rate_limit(100);
  h.info.set_upload_rate(30);
  CHECK(h.free_upload() == 70);
  h.info.set_upload_rate(300);
  CHECK(h.free_upload() == 0);
  CHECK(h.free_slot_fraction() == 1.0);
  h.info.set_upload_slots(4);
  h.info.set_upload_slots_in_use(3);
  CHECK(h.free_slot_fraction() == Approx(0.25));
}

TEST_CASE("manual clock maps to wall time", "[scheduler][resource]") {
  manual_clock clk(1000);
  auto t0 = clk.now();
  clk.advance(1500ms);
  CHECK(clk.unix_ms(t0) == 1000);
  CHECK(clk.unix_ms(clk.now()) == 2500);
}
