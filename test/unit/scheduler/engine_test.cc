// The decision engine, driven event by event with a manual clock.

#include <catch2/catch.hpp>
#include <chrono>

#include "test/unit/scheduler/harness.h"

using namespace shoal::scheduler;
namespace v1 = shoal::v1;
using namespace shoal::scheduler::test;
using namespace std::chrono_literals;
using D = v1::Decision;

namespace {

std::vector<std::uint32_t> range(std::uint32_t from, std::uint32_t to) {
  std::vector<std::uint32_t> out;
  for (std::uint32_t i = from; i < to; ++i) out.push_back(i);
  return out;
}

// Three announced hosts; a is the source of kTask (10 pieces), b and c children.
struct swarm : fixture {
  explicit swarm(engine_options o = {}) : fixture(o) {
    announce("a");
    announce("b");
    announce("c");
    sa = join("a");
    sb = join("b", {.has_client = false});
    sc = join("c", {.has_client = true});
    sink.clear();
  }
  stream_id sa{}, sb{}, sc{};
};

}  // namespace

TEST_CASE("register: the first peer with a client is the source, the others get parents",
          "[scheduler][engine]") {
  fixture f;
  f.announce("a");
  f.announce("b");
  auto sa = f.join("a");
  auto da = f.sink.take(sa);
  REQUIRE(da.size() == 2);
  REQUIRE(da[0].has_digests());  // every new peer first learns the known digests
  CHECK(da[0].digests().digests_size() == 0);
  CHECK_FALSE(da[0].digests().sealed());
  REQUIRE(da[1].has_from_origin());
  CHECK(pieces_of(da[1].from_origin()) == range(0, 10));

  auto sb = f.join("b");
  auto db = f.sink.take(sb);
  REQUIRE(db.size() == 2);
  CHECK(db[0].has_digests());
  REQUIRE(db[1].has_parents());
  REQUIRE(db[1].parents().parents_size() == 1);
  const auto& p = db[1].parents().parents(0);
  CHECK(p.host_id() == "a");
  CHECK(p.addr() == "10.0.0.1:7401");
  CHECK(p.source());
  CHECK(f.sink.take(sa).empty());

  auto info = f.stat();
  CHECK(info.state() == "running");
  CHECK(info.piece_count() == 10);
  CHECK(f.peer_info(info, "a")->source());
  CHECK(f.peer_info(info, "b")->parent_host_ids(0) == "a");
  CHECK(f.m.source_elections.value() == 1);
  CHECK(f.m.peers.value() == 2);
}

TEST_CASE("register: without a client nobody reads origin until a peer with one comes",
          "[scheduler][engine]") {
  fixture f;
  f.announce("a");
  f.announce("b");
  auto sa = f.join("a", {.has_client = false});
  auto da = f.sink.take(sa);
  CHECK(count_of(da, D::kFromOrigin) == 0);
  REQUIRE(last_of(da, D::kParents));
  CHECK(last_of(da, D::kParents)->parents().parents_size() == 0);  // registered, wait
  auto sb = f.join("b");
  CHECK(count_of(f.sink.take(sb), D::kFromOrigin) == 1);
  // a now learns it can fetch from the new source.
  f.e.tick();
  auto pa = last_of(f.sink.take(sa), D::kParents);
  REQUIRE(pa);
  CHECK(hosts_of(pa->parents()) == std::vector<std::string>{"b"});
}

TEST_CASE("election: the first source is one of the origin zone's peers, waited for",
          "[scheduler][engine][election]") {
  engine_options o;
  o.origin_zone = "a";
  fixture f(o);
  f.announce("far", {.zone = "b"});
  f.announce("near", {.zone = "a"});
  auto s_far = f.join("far");
  auto d_far = f.sink.take(s_far);
  CHECK(count_of(d_far, D::kFromOrigin) == 0);
  REQUIRE(f.e.next_election());
  CHECK(*f.e.next_election() == f.clk.now() + o.election_window);
  f.clk.advance(100ms);
  f.e.run_due_elections();  // not due yet
  CHECK(f.sink.take(s_far).empty());
  auto s_near = f.join("near");
  CHECK(count_of(f.sink.take(s_near), D::kFromOrigin) == 1);
  // The peer that waited gets the source as its parent at once, not at the next tick.
  auto p = last_of(f.sink.take(s_far), D::kParents);
  REQUIRE(p);
  CHECK(hosts_of(p->parents()) == std::vector<std::string>{"near"});
  CHECK_FALSE(f.e.next_election());
  CHECK(f.m.source_elections.value() == 1);
}

TEST_CASE("election: the first source is the fastest announced host's peer, waited for",
          "[scheduler][engine][election]") {
  constexpr std::uint64_t MiB = 1 << 20;
  fixture f;
  f.announce("slow", {.link_rate = 6 * MiB});
  f.announce("fast", {.link_rate = 25 * MiB});
  f.announce("limited", {.upload_limit = 10 * MiB, .link_rate = 100 * MiB});
  auto s_slow = f.join("slow");
  CHECK(count_of(f.sink.take(s_slow), D::kFromOrigin) == 0);
  auto s_limited = f.join("limited");  // 10 MiB/s: its upload limit counts
  CHECK(count_of(f.sink.take(s_limited), D::kFromOrigin) == 0);
  auto s_fast = f.join("fast");  // the fastest known host: elected at once
  CHECK(count_of(f.sink.take(s_fast), D::kFromOrigin) == 1);
  // slow and limited get the source, and each other (receiving too).
  CHECK(hosts_of(last_of(f.sink.take(s_slow), D::kParents)->parents()) ==
        std::vector<std::string>{"fast", "limited"});
  SECTION("hosts that announce no rate are not taken for slow") {
    fixture g;
    g.announce("told", {.link_rate = 25 * MiB});
    g.announce("untold");
    auto s = g.join("told");
    CHECK(count_of(g.sink.take(s), D::kFromOrigin) == 0);  // "untold" may be faster
    auto u = g.join("untold");
    CHECK(count_of(g.sink.take(u), D::kFromOrigin) == 1);
  }
}

TEST_CASE("election: another zone's peer once the window passes, or when the zone has no host",
          "[scheduler][engine][election]") {
  engine_options o;
  o.origin_zone = "a";
  SECTION("the origin zone's host does not register the task") {
    fixture f(o);
    f.announce("far", {.zone = "b"});
    f.announce("near", {.zone = "a"});
    auto s_far = f.join("far");
    CHECK(count_of(f.sink.take(s_far), D::kFromOrigin) == 0);
    f.clk.advance(o.election_window);
    f.e.run_due_elections();
    CHECK(count_of(f.sink.take(s_far), D::kFromOrigin) == 1);
    CHECK_FALSE(f.e.next_election());
  }
  SECTION("no host of the origin zone is known: no wait") {
    fixture f(o);
    f.announce("far", {.zone = "b"});
    auto s_far = f.join("far");
    CHECK(count_of(f.sink.take(s_far), D::kFromOrigin) == 1);
    CHECK_FALSE(f.e.next_election());
  }
  SECTION("a registry with a zone of its own") {
    o.origin_zones["reg.example:5000"] = "b";
    fixture f(o);
    f.announce("far", {.zone = "b"});
    f.announce("near", {.zone = "a"});
    auto s_b = f.join("far", {.registry = "reg.example:5000"});
    CHECK(count_of(f.sink.take(s_b), D::kFromOrigin) == 1);
  }
  SECTION("later elections (the source left) do not wait") {
    fixture f(o);
    f.announce("far", {.zone = "b"});
    f.announce("far2", {.zone = "b"});
    f.announce("near", {.zone = "a"});
    auto s_near = f.join("near");
    auto s_far = f.join("far");
    f.sink.clear();
    f.e.on_stream_end(s_near);
    CHECK(count_of(f.sink.take(s_far), D::kFromOrigin) == 1);
  }
}

TEST_CASE("register: mismatched lengths and malformed registrations are aborted",
          "[scheduler][engine]") {
  fixture f;
  f.announce("a");
  f.announce("b");
  f.join("a");
  auto sb = f.join("b", {.content_length = 12345});
  auto db = f.sink.take(sb);
  REQUIRE(db.size() == 1);
  REQUIRE(db[0].has_abort());
  CHECK(db[0].abort().reason() == v1::Abort::INVALID);
  CHECK_THAT(db[0].abort().message(), Catch::Contains("content_length 12345"));
  CHECK(f.sink.closed(sb));
  CHECK(f.stat().peers_size() == 1);

  auto bad_id = f.join("b", {.task = "not-a-digest"});
  CHECK(f.sink.take(bad_id).at(0).abort().reason() == v1::Abort::INVALID);
  auto bad_bitmap = f.join("b", {.bitmap = std::string(5, '\xff')});
  CHECK(f.sink.take(bad_bitmap).at(0).abort().reason() == v1::Abort::INVALID);
  auto bad_digest = f.join("b", {.known = {{99, sha(1)}}});
  CHECK(f.sink.take(bad_digest).at(0).abort().reason() == v1::Abort::INVALID);

  // An event before Register.
  auto s = f.open();
  f.finished(s, 0, sha(0));
  CHECK(f.sink.take(s).at(0).abort().reason() == v1::Abort::INVALID);
  CHECK(f.sink.closed(s));
}

TEST_CASE("digests: the source's pieces reach the others in batches", "[scheduler][engine]") {
  swarm w;
  w.finished(w.sa, 0, sha(0));
  w.finished(w.sa, 1, sha(1));
  CHECK(w.sink.take(w.sb).empty());  // batched, not sent per piece
  auto due = w.e.next_digest_flush();
  REQUIRE(due);
  CHECK(*due == w.clk.now() + w.e.options().digest_batch_delay);
  w.e.flush_digests();
  CHECK_FALSE(w.e.next_digest_flush());
  for (auto s : {w.sb, w.sc}) {
    auto ds = w.sink.take(s);
    REQUIRE(ds.size() == 1);
    REQUIRE(ds[0].digests().digests_size() == 2);
    CHECK(ds[0].digests().digests(0).index() == 0);
    CHECK(ds[0].digests().digests(1).sha256() == sha(1));
    CHECK_FALSE(ds[0].digests().sealed());
  }
  CHECK(w.sink.take(w.sa).empty());  // the reporter does not get its own digests back
  CHECK(w.stat().digests_known() == 2);

  // A new peer learns every known digest at once.
  w.announce("d");
  auto sd = w.join("d");
  auto dd = w.sink.take(sd);
  REQUIRE(dd.at(0).has_digests());
  CHECK(dd[0].digests().digests_size() == 2);
}

TEST_CASE("digests: a full batch is sent at once", "[scheduler][engine]") {
  engine_options o;
  o.digest_batch_size = 4;
  fixture f(o);
  f.announce("a");
  f.announce("b");
  auto sa = f.join("a");
  auto sb = f.join("b");
  f.sink.clear();
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sa, i, sha(i));
  auto db = f.sink.take(sb);
  REQUIRE(db.size() == 1);
  CHECK(db[0].digests().digests_size() == 4);
  CHECK_FALSE(f.e.next_digest_flush());
}

TEST_CASE("children: pieces count only when their digest matches", "[scheduler][engine]") {
  swarm w;
  w.finished(w.sa, 0, sha(0));
  w.finished(w.sb, 0, sha(0), "a");
  w.finished(w.sc, 0, sha(0, 'c'), "a");  // wrong bytes: ignored
  w.finished(w.sc, 1, sha(1), "a");       // digest not known yet: ignored
  auto info = w.stat();
  CHECK(w.peer_info(info, "b")->finished_pieces() == 1);
  CHECK(w.peer_info(info, "c")->finished_pieces() == 0);
  CHECK(w.peer_info(info, "b")->bytes_from_peers() == 4096);
  CHECK(w.peer_info(info, "a")->bytes_from_origin() == 4096);
}

TEST_CASE("re-election: the source leaves, another reads only what nobody holds",
          "[scheduler][engine]") {
  swarm w;
  for (std::uint32_t i = 0; i < 4; ++i) w.finished(w.sa, i, sha(i));
  w.finished(w.sb, 0, sha(0), "a");
  w.finished(w.sb, 2, sha(2), "a");
  w.finished(w.sc, 1, sha(1), "a");
  w.sink.clear();

  w.e.on_stream_end(w.sa);
  // c has a client, b does not: c is elected and reads 3 and 4..9 (0, 1 and 2
  // are held by b and c).
  auto dc = w.sink.take(w.sc);
  auto fo = last_of(dc, D::kFromOrigin);
  REQUIRE(fo);
  CHECK(pieces_of(fo->from_origin()) == std::vector<std::uint32_t>{3, 4, 5, 6, 7, 8, 9});
  // c still lacks 0 and 2, which b holds.
  auto pc = last_of(dc, D::kParents);
  REQUIRE(pc);
  CHECK(hosts_of(pc->parents()) == std::vector<std::string>{"b"});
  // b lost its parent: it is pointed at the new source.
  auto pb = last_of(w.sink.take(w.sb), D::kParents);
  REQUIRE(pb);
  CHECK(hosts_of(pb->parents()) == std::vector<std::string>{"c"});
  CHECK(w.m.source_elections.value() == 2);
  auto info = w.stat();
  CHECK(w.peer_info(info, "c")->source());
  CHECK(info.peers_size() == 2);
}

TEST_CASE("re-election: when a holder leaves, the source's origin list grows",
          "[scheduler][engine]") {
  swarm w;
  w.finished(w.sa, 0, sha(0));
  w.finished(w.sb, 0, sha(0), "a");
  w.e.on_stream_end(w.sa);  // c becomes source for 1..9
  auto fo = last_of(w.sink.take(w.sc), D::kFromOrigin);
  REQUIRE(fo);
  CHECK(pieces_of(fo->from_origin()) == range(1, 10));
  w.e.on_stream_end(w.sb);  // piece 0 is now held by nobody
  fo = last_of(w.sink.take(w.sc), D::kFromOrigin);
  REQUIRE(fo);
  CHECK(pieces_of(fo->from_origin()) == range(0, 10));
}

TEST_CASE("stall: a silent source is replaced, it is told to stop and gets parents",
          "[scheduler][engine]") {
  swarm w;
  const auto stall = w.e.options().source_stall_timeout;
  w.finished(w.sa, 0, sha(0));
  w.finished(w.sa, 1, sha(1));
  w.finished(w.sb, 0, sha(0), "a");
  w.sink.clear();

  w.clk.advance(stall);
  w.e.tick();
  CHECK(count_of(w.sink.take(w.sc), D::kFromOrigin) == 0);  // not yet

  w.clk.advance(1s);
  w.e.tick();
  auto dc = w.sink.take(w.sc);
  auto fo = last_of(dc, D::kFromOrigin);
  REQUIRE(fo);
  CHECK(pieces_of(fo->from_origin()) == range(2, 10));  // a still holds 0 and 1
  auto da = w.sink.take(w.sa);
  REQUIRE(da.size() == 2);
  CHECK(da[0].has_stop_from_origin());
  REQUIRE(da[1].has_parents());
  CHECK(hosts_of(da[1].parents()) == std::vector<std::string>{"b", "c"});
  auto info = w.stat();
  CHECK(w.peer_info(info, "c")->source());
  CHECK_FALSE(w.peer_info(info, "a")->source());

  // The old source's late origin reads still count (same bytes, same digest).
  w.finished(w.sa, 2, sha(2));
  CHECK(w.stat().digests_known() == 3);
}

TEST_CASE("stall: progress resets the timer, and a lone source is kept", "[scheduler][engine]") {
  fixture f;
  f.announce("a");
  auto sa = f.join("a");
  f.sink.clear();
  f.clk.advance(15s);
  f.finished(sa, 0, sha(0));
  f.clk.advance(15s);
  f.announce("a");
  f.e.tick();
  CHECK(f.sink.take(sa).empty());
  f.clk.advance(10s);
  f.e.tick();
  CHECK(f.sink.take(sa).empty());  // stalled, but nobody else can take over
  CHECK(f.peer_info(f.stat(), "a")->source());
}

TEST_CASE("poison: a failed whole-blob check aborts every peer and forgets the task",
          "[scheduler][engine]") {
  swarm w;
  w.finished(w.sa, 0, sha(0));
  w.source_finished(w.sa, false);
  for (auto s : {w.sa, w.sb, w.sc}) {
    auto ds = w.sink.take(s);
    auto ab = last_of(ds, D::kAbort);
    REQUIRE(ab);
    CHECK(ab->abort().reason() == v1::Abort::POISONED);
    CHECK(w.sink.closed(s));
  }
  CHECK_FALSE(w.e.stat_task(task_id(kTask)));
  CHECK(w.m.poisoned_tasks.value() == 1);
  CHECK(w.m.peers.value() == 0);

  // Registrations start over: a new source, no digests.
  auto sb = w.join("b");
  auto db = w.sink.take(sb);
  CHECK(db.at(0).digests().digests_size() == 0);
  REQUIRE(last_of(db, D::kFromOrigin));
  CHECK(pieces_of(last_of(db, D::kFromOrigin)->from_origin()) == range(0, 10));
}

TEST_CASE("poison: two origin reads of one piece that disagree", "[scheduler][engine]") {
  swarm w;
  w.finished(w.sa, 3, sha(3));
  w.e.on_stream_end(w.sa);  // nobody holds 3 now: c takes over and reads it again
  w.finished(w.sc, 3, sha(3, 'd'));
  auto ab = last_of(w.sink.take(w.sb), D::kAbort);
  REQUIRE(ab);
  CHECK(ab->abort().reason() == v1::Abort::POISONED);
  CHECK_FALSE(w.e.stat_task(task_id(kTask)));
}

TEST_CASE("seal: a verified source seals the task and everyone hears it", "[scheduler][engine]") {
  swarm w;
  for (std::uint32_t i = 0; i < 9; ++i) w.finished(w.sa, i, sha(i));
  w.source_finished(w.sa, true);  // a lacks piece 9: not sealed yet
  CHECK(w.stat().state() == "running");
  w.finished(w.sa, 9, sha(9));
  w.source_finished(w.sa, true);
  CHECK(w.stat().state() == "sealed");
  for (auto s : {w.sb, w.sc}) {
    auto ds = w.sink.take(s);
    auto last = last_of(ds, D::kDigests);
    REQUIRE(last);
    CHECK(last->digests().sealed());
    // Every digest arrived (batches plus the final message).
    int n = 0;
    for (const auto& d : ds)
      if (d.has_digests()) n += d.digests().digests_size();
    CHECK(n == 10);
  }
  // A peer that registers now learns the sealed list at once.
  w.announce("d");
  auto sd = w.join("d");
  auto dd = w.sink.take(sd);
  CHECK(dd.at(0).digests().sealed());
  CHECK(dd[0].digests().digests_size() == 10);
  CHECK(count_of(dd, D::kFromOrigin) == 0);
  // After sealing, a late "not verified" from someone only drops that copy.
  w.source_finished(w.sc, false);
  CHECK(last_of(w.sink.take(w.sc), D::kAbort)->abort().reason() == v1::Abort::POISONED);
  CHECK(w.stat().state() == "sealed");
}

TEST_CASE("piece failures: a digest mismatch blocks that parent for the child",
          "[scheduler][engine]") {
  swarm w;
  w.finished(w.sa, 0, sha(0));
  w.finished(w.sa, 1, sha(1));
  w.finished(w.sc, 0, sha(0), "a");
  w.finished(w.sc, 1, sha(1), "a");
  w.e.tick();
  auto pb = last_of(w.sink.take(w.sb), D::kParents);
  REQUIRE(pb);
  CHECK(hosts_of(pb->parents()) == std::vector<std::string>{"a", "c"});

  w.failed_piece(w.sb, 0, "c", v1::PieceFailed::DIGEST_MISMATCH);
  pb = last_of(w.sink.take(w.sb), D::kParents);
  REQUIRE(pb);
  CHECK(hosts_of(pb->parents()) == std::vector<std::string>{"a"});
  auto info = w.stat();
  CHECK(w.peer_info(info, "c")->failures() == 1);
  CHECK(w.m.piece_failures.with({"digest_mismatch"}).value() == 1);
  // Blocked for good: later ticks do not bring it back.
  w.e.tick();
  CHECK(count_of(w.sink.take(w.sb), D::kParents) == 0);
  // Other children may still use it.
  w.announce("d");
  auto sd = w.join("d");
  auto pd = last_of(w.sink.take(sd), D::kParents);
  REQUIRE(pd);
  CHECK(hosts_of(pd->parents()) == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("piece failures: other reasons lower the parent's score and re-schedule",
          "[scheduler][engine]") {
  engine_options o;
  o.evaluation.parents_per_child = 1;
  o.evaluation.w.jitter = 0;
  fixture f(o);
  for (auto h : {"a", "b", "c", "d"}) f.announce(h);
  auto sa = f.join("a");
  auto sb = f.join("b");
  auto sc = f.join("c");
  auto sd = f.join("d");
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sa, i, sha(i));
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sb, i, sha(i), "a");
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sc, i, sha(i), "a");
  f.e.tick();
  f.sink.clear();
  const auto before = f.stat();
  const std::string first = f.peer_info(before, "d")->parent_host_ids(0);
  f.failed_piece(sd, 0, first, v1::PieceFailed::TIMEOUT);
  f.failed_piece(sd, 1, first, v1::PieceFailed::CONNECT);
  auto pd = last_of(f.sink.take(sd), D::kParents);
  REQUIRE(pd);
  REQUIRE(pd->parents().parents_size() == 1);
  CHECK(pd->parents().parents(0).host_id() != first);
  CHECK(f.m.piece_failures.with({"timeout"}).value() == 1);
}

TEST_CASE("piece failures: a busy parent (UNAVAILABLE) keeps its place and its score",
          "[scheduler][engine]") {
  engine_options o;
  o.evaluation.parents_per_child = 1;
  o.evaluation.w.jitter = 0;
  fixture f(o);
  for (auto h : {"a", "b", "c", "d"}) f.announce(h);
  auto sa = f.join("a");
  auto sb = f.join("b");
  auto sc = f.join("c");
  auto sd = f.join("d");
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sa, i, sha(i));
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sb, i, sha(i), "a");
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sc, i, sha(i), "a");
  f.e.tick();
  f.sink.clear();
  const std::string first = f.peer_info(f.stat(), "d")->parent_host_ids(0);
  // 503s while its slots are busy: a load signal, not a fault.
  for (std::uint32_t i = 0; i < 10; ++i)
    f.failed_piece(sd, i % 4, first, v1::PieceFailed::UNAVAILABLE);
  f.e.tick();
  CHECK(count_of(f.sink.take(sd), D::kParents) == 0);
  const auto after = f.stat();
  CHECK(f.peer_info(after, "d")->parent_host_ids(0) == first);
  CHECK(f.peer_info(after, first)->failures() == 0);
  CHECK(f.m.piece_failures.with({"unavailable"}).value() == 10);
}

TEST_CASE("done: keeps serving as a parent, a complete copy seals", "[scheduler][engine]") {
  swarm w;
  for (std::uint32_t i = 0; i < 10; ++i) w.finished(w.sa, i, sha(i));
  for (std::uint32_t i = 0; i < 10; ++i) w.finished(w.sb, i, sha(i), "a");
  w.done(w.sb);
  // b verified the whole blob before saying Done: the list is final.
  CHECK(w.stat().state() == "sealed");
  CHECK(w.peer_info(w.stat(), "b")->state() == "done");
  // It no longer downloads, so it holds no parent slot.
  CHECK(w.peer_info(w.stat(), "b")->parent_host_ids_size() == 0);
  CHECK(w.e.state().find_task(task_id(kTask))->find_peer(host_id("a"))->children == 1);
  w.e.on_stream_end(w.sa);
  w.e.tick();
  auto dc = w.sink.take(w.sc);
  auto pc = last_of(dc, D::kParents);
  REQUIRE(pc);
  CHECK(hosts_of(pc->parents()) == std::vector<std::string>{"b"});
  CHECK(count_of(dc, D::kFromOrigin) == 0);  // sealed: nobody reads origin again
}

TEST_CASE("failed source: another is elected, too many failures abort with NO_SOURCE",
          "[scheduler][engine]") {
  swarm w;
  w.fail(w.sa, "401 Unauthorized");
  CHECK(count_of(w.sink.take(w.sc), D::kFromOrigin) == 1);
  w.fail(w.sc, "401 Unauthorized");
  CHECK(count_of(w.sink.take(w.sb), D::kFromOrigin) == 1);  // any running peer now
  w.fail(w.sb, "401 Unauthorized");
  for (auto s : {w.sa, w.sb, w.sc}) {
    auto ab = last_of(w.sink.take(s), D::kAbort);
    REQUIRE(ab);
    CHECK(ab->abort().reason() == v1::Abort::NO_SOURCE);
  }
  CHECK_FALSE(w.e.stat_task(task_id(kTask)));
}

TEST_CASE("hosts: expiry and LeaveHost remove their peers", "[scheduler][engine]") {
  swarm w;
  const auto ttl = w.e.options().host_ttl;
  w.clk.advance(ttl - 1s);
  w.announce("b");
  w.announce("c");
  w.clk.advance(2s);
  w.e.tick();
  auto ab = last_of(w.sink.take(w.sa), D::kAbort);
  REQUIRE(ab);
  CHECK(ab->abort().reason() == v1::Abort::HOST_GONE);
  CHECK(w.sink.closed(w.sa));
  CHECK(w.e.list_hosts().hosts_size() == 2);
  CHECK(w.stat().peers_size() == 2);
  // The source went with it: c takes over.
  CHECK(w.peer_info(w.stat(), "c")->source());

  w.e.leave_host(host_id("c"));
  CHECK(w.sink.closed(w.sc));
  CHECK(w.e.list_hosts().hosts_size() == 1);
  CHECK(w.peer_info(w.stat(), "b")->source());  // replacement: any running peer
  w.e.leave_host(host_id("b"));
  CHECK_FALSE(w.e.stat_task(task_id(kTask)));
  CHECK(w.e.list_tasks().tasks_size() == 0);
  CHECK(w.m.hosts.value() == 0);
}

TEST_CASE("restart: re-registrations adopt digests, keep the old source, and Done seals",
          "[scheduler][engine]") {
  // A fresh scheduler; the daemons come back with what they had.
  fixture f;
  for (auto h : {"a", "b", "c"}) f.announce(h);
  std::vector<std::pair<std::uint32_t, std::string>> known;
  for (std::uint32_t i = 0; i < 6; ++i) known.emplace_back(i, sha(i));
  // c (a child, with a client) comes back first; it held 0..3.
  auto sc = f.join("c", {.bitmap = std::string("\x0f", 1), .known = known});
  // The source must not change hands only because c was first: but nobody
  // else is here yet, so c is elected for what is missing.
  auto dc = f.sink.take(sc);
  REQUIRE(last_of(dc, D::kFromOrigin));
  CHECK(pieces_of(last_of(dc, D::kFromOrigin)->from_origin()) == range(4, 10));
  CHECK(f.stat().digests_known() == 6);

  fixture g;
  for (auto h : {"a", "b", "c"}) g.announce(h);
  auto sb = g.join("b", {.has_client = true, .bitmap = std::string("\x03", 1), .known = known});
  (void)sb;
  auto sa = g.join("a", {.was_source = true, .bitmap = std::string("\x3f", 1), .known = known});
  // b was elected before a returned; a is told to stop reading origin.
  CHECK(count_of(g.sink.take(sa), D::kStopFromOrigin) == 1);

  fixture h;
  for (auto x : {"a", "b"}) h.announce(x);
  auto ha = h.join("a", {.was_source = true, .bitmap = std::string("\x3f", 1), .known = known});
  auto hb = h.join("b", {.bitmap = std::string("\x03", 1), .known = known});
  auto da = h.sink.take(ha);
  REQUIRE(last_of(da, D::kFromOrigin));
  CHECK(pieces_of(last_of(da, D::kFromOrigin)->from_origin()) == range(6, 10));
  CHECK(hosts_of(last_of(h.sink.take(hb), D::kParents)->parents()) ==
        std::vector<std::string>{"a"});
  for (std::uint32_t i = 6; i < 10; ++i) h.finished(ha, i, sha(i));
  h.done(ha);
  CHECK(h.stat().state() == "sealed");

  // Digests that disagree between re-registering peers poison the task.
  fixture k;
  for (auto x : {"a", "b"}) k.announce(x);
  auto ka = k.join("a", {.known = {{0, sha(0)}}});
  k.join("b", {.known = {{0, sha(0, 'b')}}});
  CHECK(last_of(k.sink.take(ka), D::kAbort)->abort().reason() == v1::Abort::POISONED);
  CHECK_FALSE(k.e.stat_task(task_id(kTask)));
}

TEST_CASE("restart: held pieces without a known digest are not offered", "[scheduler][engine]") {
  fixture f;
  f.announce("a");
  f.announce("b");
  auto sa = f.join("a", {.has_client = false, .bitmap = std::string("\x07", 1),
                         .known = {{0, sha(0)}}});
  (void)sa;
  CHECK(f.peer_info(f.stat(), "a")->finished_pieces() == 1);
  auto sb = f.join("b");
  auto fo = last_of(f.sink.take(sb), D::kFromOrigin);
  REQUIRE(fo);
  CHECK(pieces_of(fo->from_origin()) == range(1, 10));
}

TEST_CASE("periodic re-scheduling adds a peer once it holds something useful",
          "[scheduler][engine]") {
  swarm w;
  auto pb = w.stat();
  CHECK(w.peer_info(pb, "b")->parent_host_ids_size() == 1);
  w.finished(w.sa, 0, sha(0));
  w.finished(w.sa, 1, sha(1));
  w.finished(w.sc, 1, sha(1), "a");
  w.e.tick();
  auto p = last_of(w.sink.take(w.sb), D::kParents);
  REQUIRE(p);
  CHECK(hosts_of(p->parents()) == std::vector<std::string>{"a", "c"});
  // Nothing changed: no new decision.
  w.e.tick();
  CHECK(count_of(w.sink.take(w.sb), D::kParents) == 0);
}

TEST_CASE("a host registering a task again replaces its old stream", "[scheduler][engine]") {
  swarm w;
  auto sb2 = w.join("b", {.has_client = false});
  CHECK(w.sink.closed(w.sb));
  CHECK(w.stat().peers_size() == 3);
  CHECK(count_of(w.sink.take(sb2), D::kParents) == 1);
  w.e.on_stream_end(w.sb);  // the stale stream's end does not remove the new peer
  CHECK(w.stat().peers_size() == 3);
}

TEST_CASE("the last peer leaving forgets the task", "[scheduler][engine]") {
  swarm w;
  w.e.on_stream_end(w.sa);
  w.e.on_stream_end(w.sb);
  w.e.on_stream_end(w.sc);
  CHECK_FALSE(w.e.stat_task(task_id(kTask)));
  CHECK(w.m.tasks.value() == 0);
}

TEST_CASE("tick: the re-scheduling sweep runs in slices and carries on across ticks",
          "[scheduler][engine]") {
  fixture f;
  for (auto h : {"a", "b", "c", "d", "e"}) f.announce(h);
  auto sa = f.join("a", {.has_client = false});
  auto sb = f.join("b", {.has_client = false});
  auto sc = f.join("c", {.has_client = false});
  f.join("d");  // the source; a, b and c learn of it only from a sweep
  // Each registration queued the peers short of parents: a, b, c and d (a
  // source may lack pieces others hold).
  CHECK(f.e.rescores_queued() == 4);
  f.sink.clear();
  // Nobody is re-scheduled by maintain() itself.
  f.e.maintain();
  CHECK_FALSE(last_of(f.sink.take(sa), D::kParents));
  // One per slice: a first (the order they were queued in).
  CHECK(f.e.sweep(1));
  auto pa = last_of(f.sink.take(sa), D::kParents);
  REQUIRE(pa);
  CHECK(hosts_of(pa->parents()) == std::vector<std::string>{"b", "c", "d"});
  CHECK_FALSE(last_of(f.sink.take(sb), D::kParents));
  // A peer registering while the sweep is going: it carries on (b and c,
  // queued before), not over, and queues a again.
  auto se = f.join("e", {.has_client = false});
  CHECK(hosts_of(last_of(f.sink.take(se), D::kParents)->parents()) ==
        std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(f.e.sweep(1));
  CHECK(hosts_of(last_of(f.sink.take(sb), D::kParents)->parents()) ==
        std::vector<std::string>{"a", "c", "d", "e"});
  CHECK(f.e.sweep(1));
  CHECK(hosts_of(last_of(f.sink.take(sc), D::kParents)->parents()) ==
        std::vector<std::string>{"a", "b", "d", "e"});
  CHECK_FALSE(f.e.sweep(10));
  CHECK(hosts_of(last_of(f.sink.take(sa), D::kParents)->parents()) ==
        std::vector<std::string>{"b", "c", "d", "e"});
  CHECK(f.e.rescores_queued() == 0);
}

TEST_CASE("digests: each task's batch is broadcast when it is due, not with the earliest",
          "[scheduler][engine]") {
  engine_options o;
  o.digest_batch_peers = 16;  // 2 peers: 20 ms; 40 peers: 3 x 20 ms
  fixture f(o);
  auto swarm_of = [&](const std::string& task, const std::string& prefix, int peers) {
    std::vector<stream_id> out;
    for (int i = 0; i < peers; ++i) {
      const std::string h = prefix + std::to_string(100 + i);
      f.announce(h);
      out.push_back(f.join(h, {.task = task}));
    }
    return out;
  };
  const auto small = swarm_of(kTask, "s", 2);
  const auto large = swarm_of(kTask2, "l", 40);
  f.sink.clear();
  const auto t0 = f.clk.now();
  f.finished(small.at(0), 0, sha(0));  // the sources report a piece from origin
  f.finished(large.at(0), 0, sha(0));
  REQUIRE(f.e.next_digest_flush() == t0 + o.digest_batch_delay);

  f.clk.advance(o.digest_batch_delay);
  f.e.flush_due_digests();
  CHECK(count_of(f.sink.take(small.at(1)), v1::Decision::kDigests) == 1);
  CHECK(count_of(f.sink.take(large.at(1)), v1::Decision::kDigests) == 0);
  // The large task keeps its own due time, and more digests join its batch.
  CHECK(f.e.next_digest_flush() == t0 + 3 * o.digest_batch_delay);
  f.finished(large.at(0), 1, sha(1));
  f.clk.advance(o.digest_batch_delay);
  f.e.flush_due_digests();
  CHECK(count_of(f.sink.take(large.at(1)), v1::Decision::kDigests) == 0);

  f.clk.advance(o.digest_batch_delay);
  f.e.flush_due_digests();
  const auto got = f.sink.take(large.at(1));
  REQUIRE(count_of(got, v1::Decision::kDigests) == 1);
  CHECK(last_of(got, v1::Decision::kDigests)->digests().digests_size() == 2);
  CHECK_FALSE(f.e.next_digest_flush());
}

TEST_CASE("digests: a task of many peers batches them for longer", "[scheduler][engine]") {
  engine_options o;  // 20 ms, 64 peers, at most 200 ms
  fixture f(o);
  std::vector<stream_id> streams;
  auto joined = [&](std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) {
      const std::string h = "h" + std::to_string(1000 + i);
      f.announce(h);
      streams.push_back(f.join(h));
    }
  };
  auto due_after = [&](std::uint32_t piece) {
    f.finished(streams.at(0), piece, sha(piece));  // h1000, the source
    auto due = f.e.next_digest_flush();
    REQUIRE(due);
    f.e.flush_digests();
    return *due - f.clk.now();
  };
  joined(0, 64);
  CHECK(due_after(0) == o.digest_batch_delay);
  joined(64, 65);  // 65 peers: twice as long
  CHECK(due_after(1) == 2 * o.digest_batch_delay);
  joined(65, 200);  // 200: 4x
  CHECK(due_after(2) == 4 * o.digest_batch_delay);
  joined(200, 700);  // 700 would be 11x: capped
  CHECK(due_after(3) == o.digest_batch_delay_max);
}
