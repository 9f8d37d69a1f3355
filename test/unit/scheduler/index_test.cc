// The task's indexes that keep a decision's cost independent of the swarm's
// size: the roster (candidate pool), holder counts per piece, the children
// index and the zone index, checked against what a walk of every peer gives.

#include <catch2/catch.hpp>
#include <random>
#include <set>
#include <string>

#include "scheduler/resource/registry.h"
#include "scheduler/scheduling/engine.h"
#include "scheduler/scheduling/evaluator.h"
#include "test/unit/scheduler/harness.h"

using namespace shoal::scheduler;
namespace v1 = shoal::v1;
using shoal::scheduler::test::fixture;
using shoal::scheduler::test::sha;

namespace {

struct world {
  manual_clock clk;
  registry reg;
  task* t = nullptr;
  std::uint64_t next = 1;

  world() { t = &reg.create_task(task_id("t"), 8 * 100, 100, {}, clk.now()); }

  peer& add(const std::string& id, const std::string& zone = "") {
    v1::Host info;
    info.set_id(id);
    info.set_peer_addr(id + ":7401");
    info.set_zone(zone);
    reg.announce(info, clk.now());
    return reg.add_peer(*t, host_id(id), stream_id{next++}, clk.now());
  }
  void remove(const std::string& id) { reg.erase_peer(*t, host_id(id)); }

  // What the indexes replace: a merge of every live peer's bitmap.
  bitmap merged() const {
    bitmap held(t->piece_count());
    for (const auto& [h, p] : t->peers())
      if (p.live()) held.merge(p.finished);
    return held;
  }
};

std::set<std::string> roster_hosts(const task& t) {
  std::set<std::string> out;
  for (std::size_t i = 0; i < t.roster().size(); ++i) {
    const peer* p = t.roster()[i];
    CHECK(p->roster_slot == i);
    out.insert(p->host.str());
  }
  return out;
}

}  // namespace

TEST_CASE("index: the roster holds exactly the task's peers after swap-removes",
          "[scheduler][index]") {
  world w;
  for (int i = 0; i < 6; ++i) w.add("h" + std::to_string(i));
  w.remove("h0");  // first slot: the last peer moves into it
  w.remove("h3");
  w.remove("h5");  // the last slot
  CHECK(roster_hosts(*w.t) == std::set<std::string>{"h1", "h2", "h4"});
  w.add("h6");
  CHECK(roster_hosts(*w.t) == std::set<std::string>{"h1", "h2", "h4", "h6"});
  for (const auto& [h, p] : w.t->peers()) CHECK(p.host_rec == w.reg.find_host(h));
}

TEST_CASE("index: holder counts follow finished pieces, failures and removals",
          "[scheduler][index]") {
  world w;
  peer& a = w.add("a");
  peer& b = w.add("b");
  peer& c = w.add("c");
  CHECK(w.t->missing_everywhere().count() == 8);
  CHECK(w.t->anything_missing());

  CHECK(w.t->add_finished(a, 0));
  CHECK_FALSE(w.t->add_finished(a, 0));  // twice is once
  w.t->add_finished(b, 0);
  w.t->add_finished(b, 1);
  bitmap cs(8);
  cs.set(2);
  cs.set(1);
  w.t->set_finished(c, cs);
  CHECK(w.t->holders(0) == 2);
  CHECK(w.t->holders(1) == 2);
  CHECK(w.t->holders(2) == 1);
  CHECK(w.t->holders(3) == 0);
  CHECK(w.t->held_by_live_peers() == w.merged());
  CHECK(w.t->missing_everywhere() == w.merged().inverted());

  // A failed peer's pieces no longer count; failing twice changes nothing.
  CHECK(w.t->mark_failed(c));
  CHECK_FALSE(w.t->mark_failed(c));
  CHECK(w.t->holders(1) == 1);
  CHECK(w.t->holders(2) == 0);
  CHECK(w.t->missing_everywhere() == w.merged().inverted());
  // Removing a failed peer must not count its pieces off a second time.
  w.remove("c");
  CHECK(w.t->holders(1) == 1);
  // Removing a live one does.
  w.remove("b");
  CHECK(w.t->holders(0) == 1);
  CHECK(w.t->holders(1) == 0);
  CHECK(w.t->missing_everywhere() == w.merged().inverted());

  for (std::uint32_t i = 0; i < 8; ++i) w.t->add_finished(a, i);
  CHECK_FALSE(w.t->anything_missing());
  CHECK(w.t->missing_everywhere().none());
  // A Register's bitmap replaces what the peer held.
  w.t->set_finished(a, bitmap(8));
  CHECK(w.t->missing_everywhere().count() == 8);
}

TEST_CASE("index: children of a parent, also after the parent or a child left",
          "[scheduler][index]") {
  world w;
  w.add("p1");
  w.add("p2");
  peer& c1 = w.add("c1");
  peer& c2 = w.add("c2");
  w.add("c3");
  w.t->set_parents(c1, {host_id("p1"), host_id("p2")});
  w.t->set_parents(c2, {host_id("p1")});
  CHECK(w.t->children_of(host_id("p1")) == std::vector<host_id>{host_id("c1"), host_id("c2")});
  CHECK(w.t->children_of(host_id("p2")) == std::vector<host_id>{host_id("c1")});
  CHECK(w.t->children_of(host_id("c3")).empty());

  // A new choice moves the child.
  w.t->set_parents(c1, {host_id("p2")});
  CHECK(w.t->children_of(host_id("p1")) == std::vector<host_id>{host_id("c2")});
  // The parent leaves: its children still list it and are found by it.
  w.remove("p1");
  CHECK(w.t->children_of(host_id("p1")) == std::vector<host_id>{host_id("c2")});
  // A child that leaves is no one's child any more.
  w.remove("c1");
  CHECK(w.t->children_of(host_id("p2")).empty());
  CHECK(w.t->find_peer(host_id("p2"))->children == 0);
}

TEST_CASE("index: the zone gateway is the lowest live host id of the zone", "[scheduler][index]") {
  world w;
  w.add("b1", "b");
  w.add("b2", "b");
  w.add("b3", "b");
  w.add("a1", "a");
  CHECK(w.t->lowest_live_in_zone("b", host_id("b1")));
  CHECK_FALSE(w.t->lowest_live_in_zone("b", host_id("b2")));
  CHECK(w.t->lowest_live_in_zone("a", host_id("a1")));
  w.t->mark_failed(*w.t->find_peer(host_id("b1")));
  CHECK(w.t->lowest_live_in_zone("b", host_id("b2")));
  w.remove("b2");
  CHECK(w.t->lowest_live_in_zone("b", host_id("b3")));
  // A heartbeat that moves a host to another zone re-indexes its peers.
  v1::Host info;
  info.set_id("a0");
  info.set_zone("c");
  w.reg.announce(info, w.clk.now());
  w.reg.add_peer(*w.t, host_id("a0"), stream_id{99}, w.clk.now());
  CHECK(w.t->lowest_live_in_zone("a", host_id("a1")));
  info.set_zone("a");
  w.reg.announce(info, w.clk.now());
  CHECK_FALSE(w.t->lowest_live_in_zone("a", host_id("a1")));
  CHECK(w.t->lowest_live_in_zone("c", host_id("zzz")));
}

TEST_CASE("index: candidate sampling never returns a removed peer", "[scheduler][index]") {
  world w;
  for (int i = 0; i < 60; ++i) {
    peer& p = w.add("h" + std::to_string(100 + i));
    w.t->add_finished(p, static_cast<std::uint32_t>(i % 8));
  }
  peer& child = w.add("child");
  std::set<std::string> removed;
  for (int i = 0; i < 60; i += 3) {
    w.remove("h" + std::to_string(100 + i));
    removed.insert("h" + std::to_string(100 + i));
  }
  evaluator_options o;
  o.candidate_limit = 8;
  evaluator ev(o);
  std::mt19937_64 rng(7);
  std::set<std::string> seen;
  for (int round = 0; round < 200; ++round) {
    auto chosen = ev.choose(w.reg, *w.t, child, w.clk.now(), rng);
    CHECK(chosen.size() == o.parents_per_child);
    for (const auto& h : chosen) {
      CHECK_FALSE(removed.contains(h.str()));
      CHECK(w.t->find_peer(h) != nullptr);
      seen.insert(h.str());
    }
  }
  // The sample spreads over the pool rather than sticking to a few.
  CHECK(seen.size() > 20);
}

TEST_CASE("index: a departing parent re-schedules only its children", "[scheduler][index]") {
  fixture f;
  for (const char* h : {"a", "b", "c", "d", "e", "f", "g"}) f.announce(h);
  engine_options o;
  const auto sa = f.join("a");  // source
  for (std::uint32_t i = 0; i < 10; ++i) f.finished(sa, i, sha(i));
  const auto sb = f.join("b");
  for (std::uint32_t i = 0; i < 10; ++i) f.finished(sb, i, sha(i), "a");
  f.done(sb);
  std::map<std::string, stream_id> kids;
  for (const char* h : {"c", "d", "e", "f", "g"}) kids[h] = f.join(h);
  f.sink.clear();
  const task& t = *f.e.state().find_task(task_id(test::kTask));
  const auto of_b = t.children_of(host_id("b"));
  REQUIRE_FALSE(of_b.empty());
  f.e.on_stream_end(sb);
  // Every child of b got new parents without b; no other child was sent any.
  for (const auto& [h, s] : kids) {
    auto ds = f.sink.take(s);
    const bool was_child = std::find(of_b.begin(), of_b.end(), host_id(h)) != of_b.end();
    if (was_child) {
      auto p = test::last_of(ds, v1::Decision::kParents);
      REQUIRE(p);
      for (const auto& x : p->parents().parents()) CHECK(x.host_id() != "b");
    } else {
      CHECK(test::count_of(ds, v1::Decision::kParents) == 0);
    }
  }
  CHECK(t.children_of(host_id("b")).empty());
}

TEST_CASE("index: the last peer leaving forgets the task and its traffic", "[scheduler][index]") {
  // remove_peer passes the task's own id to erase_task: it must not be read
  // after the task is freed (the asan preset caught this under load).
  fixture f;
  f.announce("a");
  f.announce("b");
  const auto sa = f.join("a");
  const auto sb = f.join("b");
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sa, i, sha(i));
  f.finished(sb, 0, sha(0), "a");
  REQUIRE(f.e.state().traffic().find_task(task_id(test::kTask)) != nullptr);
  f.e.on_stream_end(sb);
  f.e.on_stream_end(sa);
  CHECK_FALSE(f.e.stat_task(task_id(test::kTask)));
  CHECK(f.e.state().traffic().find_task(task_id(test::kTask)) == nullptr);
  CHECK(f.e.state().peer_count() == 0);
}
