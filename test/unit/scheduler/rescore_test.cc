// Incremental re-scoring: children are re-scored when something changed for
// them, plus a slow full pass; an idle task costs nothing.

#include <catch2/catch.hpp>
#include <chrono>

#include "test/unit/scheduler/harness.h"

using namespace shoal::scheduler;
namespace v1 = shoal::v1;
using namespace shoal::scheduler::test;
using namespace std::chrono_literals;
using D = v1::Decision;

namespace {

// The full pass off: only what events queue is re-scored.
engine_options no_full_pass() {
  engine_options o;
  o.full_pass_period = std::chrono::hours(24 * 365);
  o.full_pass_min_rate = 0;
  return o;
}

// ... and one parent per child, chosen without jitter: whom it gets is foreseeable.
engine_options one_parent() {
  engine_options o = no_full_pass();
  o.evaluation.parents_per_child = 1;
  o.evaluation.w.jitter = 0;
  return o;
}

// Parent choices computed so far, whatever triggered them.
double rescores(const fixture& f) {
  double n = 0;
  for (const auto* c : f.m.parent_choices) n += c->value();
  return n;
}

double choices(const fixture& f, choice_trigger why) { return f.m.choices(why); }

void run_maintain(fixture& f) {
  f.e.maintain();
  while (f.e.sweep(SIZE_MAX)) {
  }
}

}  // namespace

TEST_CASE(
    "rescore: a zone's gateway whose only parent across zones has nothing left it lacks is "
    "re-scored at the next maintain, without a full pass",
    "[scheduler][rescore]") {
  fixture f(one_parent());
  // Zone x: a, the source, with little upload left, and c, with plenty.
  // Zone y: b alone, its gateway, which takes parents in x only while they
  // hold something it lacks (a peer of its own zone would qualify anyway).
  f.announce("a", {.zone = "x", .upload_limit = 1'000'000, .upload_rate = 990'000});
  f.announce("b", {.zone = "y"});
  f.announce("c", {.zone = "x"});
  f.announce("d", {.zone = "x"});
  auto sa = f.join("a");
  for (std::uint32_t i = 0; i < 10; ++i) f.finished(sa, i, sha(i));
  auto sc = f.join("c", {.has_client = false});
  f.finished(sc, 0, sha(0), "a");
  f.finished(sc, 1, sha(1), "a");
  auto sb = f.join("b", {.has_client = false});
  auto pb = last_of(f.sink.take(sb), D::kParents);
  REQUIRE(pb);
  REQUIRE(hosts_of(pb->parents()) == std::vector<std::string>{"c"});
  auto sd = f.join("d", {.has_client = false});  // its situation does not change below
  run_maintain(f);
  f.sink.clear();
  const double before = rescores(f);

  // b now holds everything c holds: c is of no use to it any more.
  f.finished(sb, 0, sha(0), "c");
  CHECK(f.e.rescores_queued() == 0);
  f.finished(sb, 1, sha(1), "c");
  CHECK(f.e.rescores_queued() == 1);
  CHECK(f.sink.take(sb).empty());  // decided when the queue is swept, not per event

  run_maintain(f);
  pb = last_of(f.sink.take(sb), D::kParents);
  REQUIRE(pb);
  CHECK(hosts_of(pb->parents()) == std::vector<std::string>{"a"});
  // b alone was re-scored (b's new pieces are news to nobody short of parents).
  CHECK(rescores(f) - before == 1);
  CHECK(choices(f, choice_trigger::parent_useless) == 1);
  CHECK(choices(f, choice_trigger::full_pass) == 0);
  CHECK(count_of(f.sink.take(sd), D::kParents) == 0);
}

TEST_CASE("rescore: an idle task costs no re-scoring", "[scheduler][rescore]") {
  fixture f;  // default options: the full pass is on
  for (auto h : {"a", "b", "c"}) f.announce(h);
  auto sa = f.join("a");
  for (std::uint32_t i = 0; i < 10; ++i) f.finished(sa, i, sha(i));
  auto sb = f.join("b");
  auto sc = f.join("c");
  f.e.flush_digests();
  // b and c have fewer parents than they want and wait for pieces: re-scoring
  // them again gains nothing until something changes.
  for (int i = 0; i < 3; ++i) {
    f.clk.advance(1s);
    f.e.tick();
  }
  f.sink.clear();
  const double settled = rescores(f);
  for (int i = 0; i < 60; ++i) {
    f.clk.advance(1s);
    for (auto h : {"a", "b", "c"}) f.announce(h);  // same heartbeat: no news
    f.e.tick();
  }
  CHECK(rescores(f) == settled);
  CHECK(f.sink.take(sb).empty());
  CHECK(f.sink.take(sc).empty());

  // Something happens: b gets a piece, and b and c (short of parents) are
  // looked at again; their parents stay (c already had b: it is receiving).
  f.finished(sb, 0, sha(0), "a");
  f.clk.advance(1s);
  f.e.tick();
  CHECK(rescores(f) > settled);
  CHECK(f.sink.take(sc).empty());
}

TEST_CASE(
    "rescore: children short of parents get a new peer at once, and another look "
    "when their task gains pieces",
    "[scheduler][rescore]") {
  fixture f(no_full_pass());
  for (auto h : {"a", "b", "c", "d"}) f.announce(h);
  auto sa = f.join("a");
  auto sb = f.join("b", {.has_client = false});
  auto pb = last_of(f.sink.take(sb), D::kParents);
  REQUIRE(pb);
  CHECK(hosts_of(pb->parents()) == std::vector<std::string>{"a"});
  f.sink.clear();
  // c registers: b, short of parents, is queued at once and gets c at the
  // next sweep, without waiting for maintain() (a tick). So is a, the source
  // (a peer may hold what it lacks), which keeps what it had: nothing.
  auto sc = f.join("c", {.has_client = false});
  CHECK(f.e.rescores_queued() == 2);
  while (f.e.sweep(SIZE_MAX)) {
  }
  pb = last_of(f.sink.take(sb), D::kParents);
  REQUIRE(pb);
  CHECK(hosts_of(pb->parents()) == std::vector<std::string>{"a", "c"});
  CHECK(f.sink.take(sa).empty());
  CHECK(choices(f, choice_trigger::short_of_parents) == 2);
  f.join("d", {.has_client = false});
  run_maintain(f);
  f.sink.clear();
  run_maintain(f);  // nothing new: nothing sent, nothing re-scored
  CHECK(f.sink.take(sb).empty());
  const double before = choices(f, choice_trigger::short_of_parents);
  run_maintain(f);
  CHECK(choices(f, choice_trigger::short_of_parents) == before);

  f.finished(sa, 0, sha(0));
  f.e.flush_digests();
  f.finished(sc, 0, sha(0), "a");
  f.sink.clear();
  run_maintain(f);
  // a, b, c and d were short of parents (8 wanted, 3 others at most): looked
  // at again, nothing new to send to b (it already had every peer).
  CHECK(choices(f, choice_trigger::short_of_parents) - before == 4);
  CHECK(f.sink.take(sb).empty());
}

TEST_CASE("rescore: a peer whose host announces its address late becomes a parent",
          "[scheduler][rescore]") {
  std::vector<std::pair<std::uint32_t, std::string>> known;
  for (std::uint32_t i = 0; i < 10; ++i) known.emplace_back(i, sha(i));
  fixture f(no_full_pass());
  f.announce("a");
  f.announce("c");
  f.join("a");
  auto sc = f.join("c", {.has_client = false});
  // b comes back from a restart with pieces 0..3 before its heartbeat: nobody
  // can fetch from it yet.
  f.join("b", {.has_client = false, .bitmap = std::string("\x0f", 1), .known = known});
  run_maintain(f);
  CHECK(hosts_of(last_of(f.sink.take(sc), D::kParents)->parents()) ==
        std::vector<std::string>{"a"});
  f.announce("b");
  run_maintain(f);
  auto pc = last_of(f.sink.take(sc), D::kParents);
  REQUIRE(pc);
  CHECK(hosts_of(pc->parents()) == std::vector<std::string>{"a", "b"});
}

TEST_CASE(
    "rescore: the full pass goes over every child of a busy task once per period, in "
    "slices",
    "[scheduler][rescore]") {
  engine_options o;
  o.full_pass_period = 10s;
  o.full_pass_min_rate = 0;
  o.evaluation.parents_per_child = 1;  // nobody is short of parents: only the pass re-scores
  fixture f(o);
  f.announce("a");
  auto sa = f.join("a");
  for (std::uint32_t i = 0; i < 10; ++i) f.finished(sa, i, sha(i));
  std::vector<stream_id> kids;
  for (int i = 0; i < 19; ++i) {
    const std::string h = "h" + std::to_string(100 + i);
    f.announce(h);
    kids.push_back(f.join(h, {.has_client = false}));
  }
  run_maintain(f);  // the first maintain earns no credit
  CHECK(choices(f, choice_trigger::full_pass) == 0);
  // 20 peers over 10 s: 2 a second (a needs nothing and is skipped).
  for (int s = 1; s <= 10; ++s) {
    f.clk.advance(1s);
    f.finished(kids[static_cast<std::size_t>(s)], 0, sha(0), "a");  // the task is busy
    f.e.maintain();
    CHECK(f.e.rescores_queued() <= 2);
    while (f.e.sweep(1)) {
    }
    if (s == 5) CHECK(choices(f, choice_trigger::full_pass) >= 8);
  }
  CHECK(choices(f, choice_trigger::full_pass) >= 19);
  CHECK(choices(f, choice_trigger::full_pass) <= 21);
}

TEST_CASE(
    "rescore: when a zone's gateway leaves, the next one is re-scored and fetches across "
    "zones",
    "[scheduler][rescore]") {
  fixture f(one_parent());
  f.announce("a", {.zone = "x"});
  for (auto h : {"b", "c", "d"}) f.announce(h, {.zone = "y"});
  auto sa = f.join("a");
  for (std::uint32_t i = 0; i < 10; ++i) f.finished(sa, i, sha(i));
  auto sb = f.join("b", {.has_client = false});  // y's gateway: fetches from a
  auto sd = f.join("d", {.has_client = false});  // from b (its zone)
  auto sc = f.join("c", {.has_client = false});  // from d (b already serves one)
  CHECK(hosts_of(last_of(f.sink.take(sb), D::kParents)->parents()) ==
        std::vector<std::string>{"a"});
  CHECK(hosts_of(last_of(f.sink.take(sd), D::kParents)->parents()) ==
        std::vector<std::string>{"b"});
  REQUIRE(hosts_of(last_of(f.sink.take(sc), D::kParents)->parents()) ==
          std::vector<std::string>{"d"});
  run_maintain(f);
  f.sink.clear();

  f.e.on_stream_end(sb);
  // c was not b's child; it is y's gateway now.
  CHECK(f.sink.take(sc).empty());
  run_maintain(f);
  auto pc = last_of(f.sink.take(sc), D::kParents);
  REQUIRE(pc);
  CHECK(hosts_of(pc->parents()) == std::vector<std::string>{"a"});
}

TEST_CASE(
    "rescore: a newcomer re-scores only the children short of parents that may take it: "
    "its own zone's, and other zones' gateways",
    "[scheduler][rescore]") {
  fixture f(no_full_pass());
  // Zone x: a (the source), b, later d. Zone y: c (its gateway, the lowest
  // host id there) and e.
  for (auto h : {"a", "b", "d"}) f.announce(h, {.zone = "x"});
  for (auto h : {"c", "e"}) f.announce(h, {.zone = "y"});
  f.join("a");
  f.join("b", {.has_client = false});
  f.join("c", {.has_client = false});
  f.join("e", {.has_client = false});
  run_maintain(f);
  REQUIRE(f.e.state().tasks().size() == 1);
  const task& t = f.e.state().tasks().begin()->second;
  auto queued = [&](const char* h) { return t.find_peer(host_id(h))->rescore_queued; };
  auto listed = [&](const char* h) { return t.find_peer(host_id(h))->short_listed; };
  // Everyone wants 8 parents and has at most 3: all short of parents.
  for (auto h : {"b", "c", "e"}) REQUIRE(listed(h));

  f.join("d", {.has_client = false});  // zone x
  CHECK(queued("b"));                  // the same zone: d is a parent for it
  CHECK(queued("c"));                  // y's gateway fetches across zones
  CHECK_FALSE(queued("e"));            // y, not its gateway: d is no parent for it
  CHECK(listed("e"));                  // still listed, for the next newcomer or new pieces
  while (f.e.sweep(SIZE_MAX)) {
  }
  f.announce("f", {.zone = "y"});
  f.join("f", {.has_client = false});
  CHECK(queued("e"));
}
