// Source election and parent scoring, on a hand-built registry.

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <random>

#include "scheduler/resource/registry.h"
#include "scheduler/scheduling/election.h"
#include "scheduler/scheduling/evaluator.h"
#include "test/unit/scheduler/harness.h"

using namespace shoal::scheduler;
namespace v1 = shoal::v1;
using namespace std::chrono_literals;

namespace {

struct world {
  manual_clock clk;
  registry reg;
  task* t = nullptr;

  world() { t = &reg.create_task(task_id("t"), 10 * 100, 100, {}, clk.now()); }

  peer& add(const std::string& id, test::host_spec h = {}, bool has_client = false) {
    v1::Host info;
    info.set_id(id);
    info.set_peer_addr(id + ":7401");
    info.set_zone(h.zone);
    info.set_seed(h.seed);
    info.set_upload_rate_limit(h.upload_limit);
    info.set_upload_rate(h.upload_rate);
    reg.announce(info, clk.now());
    peer& p = reg.add_peer(*t, host_id(id), stream_id{next++}, clk.now());
    p.has_client = has_client;
    return p;
  }
  void give(peer& p, std::initializer_list<std::uint32_t> pieces) {
    for (auto i : pieces) t->add_finished(p, i);
  }
  std::uint64_t next = 1;
};

std::vector<std::string> names(const std::vector<host_id>& hs) {
  std::vector<std::string> out;
  for (const auto& h : hs) out.push_back(h.str());
  return out;
}

}  // namespace

TEST_CASE("election: initial needs a client, a seed or the previous source",
          "[scheduler][election]") {
  world w;
  w.add("a");  // no client: a prefetch without credentials
  CHECK_FALSE(elect_source(w.reg, *w.t, election_mode::initial));
  // Replacement takes any running peer.
  CHECK(elect_source(w.reg, *w.t, election_mode::replacement) == host_id("a"));
  w.add("b", {}, true);
  w.add("c", {}, true);
  CHECK(elect_source(w.reg, *w.t, election_mode::initial) == host_id("b"));
}

TEST_CASE("election: seed over client, previous source over all, exclusions honoured",
          "[scheduler][election]") {
  world w;
  w.add("a", {}, true);
  peer& seed = w.add("s", {.seed = true});
  CHECK(elect_source(w.reg, *w.t, election_mode::initial) == host_id("s"));
  peer& prev = w.add("p");
  prev.was_source = true;
  CHECK(elect_source(w.reg, *w.t, election_mode::initial) == host_id("p"));
  const host_id ex("p");
  CHECK(elect_source(w.reg, *w.t, election_mode::initial, &ex) == host_id("s"));
  w.t->source.excluded.insert(host_id("s"));
  CHECK(elect_source(w.reg, *w.t, election_mode::initial, &ex) == host_id("a"));
  seed.mark_failed();
  prev.mark_done();  // done and failed peers are never elected
  w.t->source.excluded.clear();
  CHECK(elect_source(w.reg, *w.t, election_mode::initial) == host_id("a"));
}

TEST_CASE("election: prefers a host others can fetch from", "[scheduler][election]") {
  world w;
  // "ghost" registered first but never announced an address.
  w.reg.ensure_host(host_id("ghost"), w.clk.now());
  peer& g = w.reg.add_peer(*w.t, host_id("ghost"), stream_id{99}, w.clk.now());
  g.has_client = true;
  w.add("b", {}, true);
  CHECK(elect_source(w.reg, *w.t, election_mode::initial) == host_id("b"));
}

TEST_CASE("parents: every live receiving peer is a candidate, others need useful pieces",
          "[scheduler][evaluator]") {
  world w;
  evaluator ev({});
  peer& child = w.add("child");
  peer& src = w.add("src", {}, true);
  peer& empty = w.add("empty");
  peer& has = w.add("has");
  peer& same = w.add("same");
  peer& stopped = w.add("stopped");
  w.give(child, {0});
  w.give(same, {0});  // holds only what the child has
  w.give(has, {5});
  w.give(stopped, {0});
  REQUIRE(stopped.mark_done());  // receives nothing more
  w.t->source.current = host_id("src");
  src.is_source = true;

  CHECK(ev.is_candidate(w.reg, *w.t, child, src));
  CHECK(ev.is_candidate(w.reg, *w.t, child, has));
  // Still receiving: the child takes each piece from it the moment it lands.
  CHECK(ev.is_candidate(w.reg, *w.t, child, empty));
  CHECK(ev.is_candidate(w.reg, *w.t, child, same));
  // Done with nothing the child lacks: of no use, now or later.
  CHECK_FALSE(ev.is_candidate(w.reg, *w.t, child, stopped));
  CHECK_FALSE(ev.is_candidate(w.reg, *w.t, child, child));

  child.blocked.insert(host_id("has"));
  CHECK_FALSE(ev.is_candidate(w.reg, *w.t, child, has));
  child.blocked.clear();
  has.mark_failed();
  CHECK_FALSE(ev.is_candidate(w.reg, *w.t, child, has));
}

TEST_CASE("parents: zone, capacity, usefulness, seed and failures order the candidates",
          "[scheduler][evaluator]") {
  evaluator_options o;
  o.w.jitter = 0;
  evaluator ev(o);

  SECTION("same zone wins among equals") {
    world w;
    peer& child = w.add("child", {.zone = "z1"});
    w.give(w.add("far", {.zone = "z2"}), {1, 2});
    w.give(w.add("near", {.zone = "z1"}), {1, 2});
    auto r = ev.rank(w.reg, *w.t, child, w.clk.now());
    REQUIRE(r.size() == 2);
    CHECK(r[0].host == host_id("near"));
    CHECK(r[0].score - r[1].score == Approx(o.w.zone));
  }
  SECTION("free upload capacity wins among equals; a zero limit is large") {
    world w;
    peer& child = w.add("child");
    w.give(w.add("busy", {.upload_limit = 100'000'000, .upload_rate = 90'000'000}), {1});
    w.give(w.add("idle", {.upload_limit = 100'000'000, .upload_rate = 0}), {1});
    w.give(w.add("unlimited", {}), {1});
    auto r = ev.rank(w.reg, *w.t, child, w.clk.now());
    CHECK(names({r[0].host, r[1].host, r[2].host}) ==
          std::vector<std::string>{"unlimited", "idle", "busy"});
  }
  SECTION("more useful pieces win") {
    world w;
    peer& child = w.add("child");
    w.give(w.add("few", {}), {1});
    w.give(w.add("many", {}), {1, 2, 3, 4});
    auto r = ev.rank(w.reg, *w.t, child, w.clk.now());
    CHECK(r[0].host == host_id("many"));
  }
  SECTION("seed bonus") {
    world w;
    peer& child = w.add("child");
    w.give(w.add("plain", {}), {1});
    w.give(w.add("seed", {.seed = true}), {1});
    auto r = ev.rank(w.reg, *w.t, child, w.clk.now());
    CHECK(r[0].host == host_id("seed"));
  }
  SECTION("recent failures lower the score until they age out") {
    world w;
    peer& child = w.add("child");
    peer& flaky = w.add("flaky", {.zone = ""});
    w.give(flaky, {1, 2, 3});
    w.give(w.add("steady", {}), {1, 2, 3});
    flaky.record_failure(w.clk.now(), o.failure_window);
    flaky.record_failure(w.clk.now(), o.failure_window);
    auto r = ev.rank(w.reg, *w.t, child, w.clk.now());
    CHECK(r[0].host == host_id("steady"));
    CHECK(r[0].score - r[1].score == Approx(2 * o.w.failure));
    w.clk.advance(o.failure_window + 1s);
    r = ev.rank(w.reg, *w.t, child, w.clk.now());
    CHECK(r[0].score == Approx(r[1].score));
  }
}

TEST_CASE("parents: choose picks the best K, deterministic for a seed", "[scheduler][evaluator]") {
  world w;
  peer& child = w.add("child", {.zone = "z"});
  for (int i = 0; i < 6; ++i) w.give(w.add("far" + std::to_string(i), {.zone = "y"}), {1});
  w.give(w.add("near", {.zone = "z"}), {1});
  evaluator_options o;
  o.parents_per_child = 3;
  evaluator ev(o);
  std::mt19937_64 rng1(7), rng2(7);
  auto a = ev.choose(w.reg, *w.t, child, w.clk.now(), rng1);
  auto b = ev.choose(w.reg, *w.t, child, w.clk.now(), rng2);
  REQUIRE(a.size() == 3);
  CHECK(a == b);
  CHECK(a[0] == host_id("near"));  // zone bonus beats the jitter
}

TEST_CASE("parents: by default a child of a 10-peer swarm gets 8 parents",
          "[scheduler][evaluator]") {
  // bench/README.md: 8 parents instead of 4 made 8- and 16-node swarms finish
  // ~0.5 s sooner (a child sees more of the pieces it lacks).
  world w;
  peer& child = w.add("child");
  for (int i = 0; i < 10; ++i) w.give(w.add("p" + std::to_string(i)), {1});
  evaluator ev{evaluator_options{}};
  std::mt19937_64 rng(3);
  CHECK(ev.choose(w.reg, *w.t, child, w.clk.now(), rng).size() == 8);
}

TEST_CASE("parents: randomness spreads children over near-equal parents",
          "[scheduler][evaluator]") {
  world w;
  for (int i = 0; i < 8; ++i) w.give(w.add("p" + std::to_string(i)), {1, 2});
  std::vector<peer*> children;
  for (int i = 0; i < 40; ++i) children.push_back(&w.add("c" + std::to_string(i)));
  evaluator_options o;
  o.parents_per_child = 2;
  evaluator ev(o);
  std::mt19937_64 rng(1);
  std::map<std::string, int> load;
  for (peer* c : children) {
    auto chosen = ev.choose(w.reg, *w.t, *c, w.clk.now(), rng);
    REQUIRE(chosen.size() == 2);
    w.t->set_parents(*c, chosen);
    for (const auto& h : chosen) ++load[h.str()];
  }
  // 80 slots, most of them over the 8 equal parents holding pieces (the
  // other children, receiving too, are candidates as well): every one of the
  // 8 gets some, none most.
  int to_holders = 0;
  for (int i = 0; i < 8; ++i) {
    const int n = load["p" + std::to_string(i)];
    CHECK(n >= 4);
    CHECK(n <= 20);
    to_holders += n;
  }
  CHECK(to_holders >= 40);
}

TEST_CASE("parents: current parents are sticky, a much better newcomer still wins",
          "[scheduler][evaluator]") {
  world w;
  peer& child = w.add("child", {.zone = "z"});
  w.give(w.add("old", {.zone = "y"}), {1});
  evaluator_options o;
  o.parents_per_child = 1;
  evaluator ev(o);
  std::mt19937_64 rng(3);
  w.t->set_parents(child, {host_id("old")});
  // An equal newcomer does not displace the current parent...
  w.give(w.add("equal", {.zone = "y"}), {1});
  for (int i = 0; i < 20; ++i)
    CHECK(ev.choose(w.reg, *w.t, child, w.clk.now(), rng) == std::vector<host_id>{host_id("old")});
  // ...a same-zone one with more pieces does.
  w.give(w.add("better", {.zone = "z"}), {1, 2, 3, 4, 5});
  CHECK(ev.choose(w.reg, *w.t, child, w.clk.now(), rng) == std::vector<host_id>{host_id("better")});
}

TEST_CASE("parents: the candidate sample keeps current parents", "[scheduler][evaluator]") {
  world w;
  peer& child = w.add("child");
  for (int i = 0; i < 30; ++i) w.give(w.add("p" + std::to_string(i)), {1});
  evaluator_options o;
  o.parents_per_child = 2;
  o.candidate_limit = 5;
  evaluator ev(o);
  w.t->set_parents(child, {host_id("p17"), host_id("p23")});
  std::mt19937_64 rng(9);
  for (int i = 0; i < 10; ++i) {
    auto c = ev.choose(w.reg, *w.t, child, w.clk.now(), rng);
    std::sort(c.begin(), c.end());
    CHECK(c == std::vector<host_id>{host_id("p17"), host_id("p23")});
  }
}

TEST_CASE("parents: one gateway per zone fetches across zones", "[scheduler][evaluator]") {
  world w;
  evaluator_options o;
  o.w.jitter = 0;
  evaluator ev(o);
  w.give(w.add("a-src", {.zone = "a"}), {1, 2, 3});
  peer& gw = w.add("b1", {.zone = "b"});
  peer& b2 = w.add("b2", {.zone = "b"});  // nothing yet: still receiving
  w.add("b3", {.zone = "b"});
  auto sorted_names = [](const std::vector<scored_parent>& r) {
    std::vector<std::string> out;
    for (const auto& p : r) out.push_back(p.host.str());
    std::sort(out.begin(), out.end());
    return out;
  };
  CHECK(ev.zone_gateway(w.reg, *w.t, gw));
  CHECK_FALSE(ev.zone_gateway(w.reg, *w.t, b2));
  // The gateway reaches into zone a and to its own zone's peers.
  CHECK(sorted_names(ev.rank(w.reg, *w.t, gw, w.clk.now())) ==
        std::vector<std::string>{"a-src", "b2", "b3"});
  // The others stay in their zone, even with peers that hold nothing yet.
  CHECK(sorted_names(ev.rank(w.reg, *w.t, b2, w.clk.now())) ==
        std::vector<std::string>{"b1", "b3"});
  // Without the option: any zone.
  evaluator_options flat = o;
  flat.zone_gateways = false;
  CHECK(sorted_names(evaluator(flat).rank(w.reg, *w.t, b2, w.clk.now())) ==
        std::vector<std::string>{"a-src", "b1", "b3"});
  // The gateway fails: the next lowest host id of the zone takes over.
  gw.mark_failed();
  CHECK(ev.zone_gateway(w.reg, *w.t, b2));
  CHECK(sorted_names(ev.rank(w.reg, *w.t, b2, w.clk.now())) ==
        std::vector<std::string>{"a-src", "b3"});
  // Hosts without a zone are not restricted.
  peer& plain = w.add("c", {});
  CHECK(sorted_names(ev.rank(w.reg, *w.t, plain, w.clk.now())) ==
        std::vector<std::string>{"a-src", "b2", "b3"});
}
