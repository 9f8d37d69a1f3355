// The dashboard's figures: traffic_stats (bytes by origin and parent, the
// per-second ring, host rates) and the JSON documents of /api/v1/..., driven
// through the engine with a manual clock.

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>

#include "scheduler/dashboard/dashboard.h"
#include "scheduler/dashboard/views.h"
#include "scheduler/resource/traffic.h"
#include "test/unit/scheduler/harness.h"

using namespace shoal::scheduler;
using namespace shoal::scheduler::test;
using namespace std::chrono_literals;
namespace json = boost::json;

TEST_CASE("traffic: bytes by origin and parent, edges, per-second ring and rates",
          "[scheduler][dashboard]") {
  manual_clock clk;
  traffic_stats t;
  const task_id a(kTask), b(kTask2);
  const host_id h1("h1"), h2("h2"), origin{};
  clk.advance(10ms);
  t.record_piece(a, h1, origin, 100, clk.now());
  t.record_piece(a, h2, h1, 100, clk.now());
  clk.advance(1s);
  t.record_piece(a, h2, h1, 50, clk.now());
  t.record_piece(b, h1, origin, 7, clk.now());

  CHECK(t.totals().from_origin == 107);
  CHECK(t.totals().from_peers == 150);
  const task_traffic* ta = t.find_task(a);
  REQUIRE(ta != nullptr);
  CHECK(ta->bytes.from_origin == 100);
  CHECK(ta->bytes.from_peers == 150);
  REQUIRE(ta->edges.size() == 2);
  const auto& e = ta->edges.at({h1, h2});
  CHECK(e.bytes == 150);
  CHECK(e.pieces == 2);
  CHECK(ta->edges.at({origin, h1}).bytes == 100);

  // The current second is still filling: the series ends with the one before.
  clk.advance(1s);
  auto s = t.series(clk.now(), 3);
  REQUIRE(s.size() == 3);
  CHECK(s[0].bytes.total() == 0);
  CHECK(s[1].bytes.from_origin == 100);
  CHECK(s[1].bytes.from_peers == 100);
  CHECK(s[2].bytes.from_origin == 7);
  CHECK(s[2].bytes.from_peers == 50);
  CHECK(s[2].at - s[1].at == 1s);

  auto r1 = t.rates(h1, clk.now());
  CHECK(r1.download == Approx(107.0 / traffic_stats::rate_window_seconds));
  CHECK(r1.upload == Approx(150.0 / traffic_stats::rate_window_seconds));
  CHECK(t.rate(clk.now()).from_peers == 150 / traffic_stats::rate_window_seconds);

  // Old seconds fall out of the ring and the rate window; totals stay.
  clk.advance(std::chrono::seconds(traffic_stats::ring_seconds + 5));
  for (const auto& p : t.series(clk.now(), traffic_stats::ring_seconds))
    CHECK(p.bytes.total() == 0);
  CHECK(t.rates(h1, clk.now()).download == 0);
  t.prune_hosts(clk.now());
  t.forget_task(a);
  CHECK(t.find_task(a) == nullptr);
  CHECK(t.totals().total() == 257);
}

TEST_CASE("traffic: edges per task are capped, bytes still counted", "[scheduler][dashboard]") {
  manual_clock clk;
  traffic_stats t;
  const task_id a(kTask);
  for (std::size_t i = 0; i < traffic_stats::max_edges_per_task + 10; ++i)
    t.record_piece(a, host_id("c" + std::to_string(i)), host_id("p"), 1, clk.now());
  CHECK(t.find_task(a)->edges.size() == traffic_stats::max_edges_per_task);
  CHECK(t.find_task(a)->bytes.from_peers == traffic_stats::max_edges_per_task + 10);
}

TEST_CASE("views: overview, hosts, tasks and one task as JSON", "[scheduler][dashboard]") {
  fixture f;
  f.announce("a", {.zone = "z1"});
  f.announce("b");
  // a reads origin, b fetches from a; 10 pieces of 4096.
  auto sa = f.join("a");
  auto sb = f.join("b", {.has_client = false});
  f.clk.advance(1s);
  for (std::uint32_t i = 0; i < 10; ++i) f.finished(sa, i, sha(i));
  f.e.flush_digests();
  for (std::uint32_t i = 0; i < 4; ++i) f.finished(sb, i, sha(i), "a");
  f.done(sa);
  f.clk.advance(1s);

  dashboard::view_context v{f.e, f.clk, "9.9.9", f.clk.now() - 5s};

  auto ov = json::parse(dashboard::overview_json(v)).as_object();
  CHECK(ov.at("version").as_string() == "9.9.9");
  CHECK(ov.at("uptime_ms").as_int64() == 5000);
  CHECK(ov.at("hosts").at("online").to_number<int>() == 2);
  CHECK(ov.at("tasks").at("active").to_number<int>() == 1);
  const auto& bytes = ov.at("bytes").as_object();
  CHECK(bytes.at("from_registry").to_number<std::uint64_t>() == 10 * 4096);
  CHECK(bytes.at("from_peers").to_number<std::uint64_t>() == 4 * 4096);
  CHECK(bytes.at("delivered").to_number<std::uint64_t>() == 14 * 4096);
  CHECK(bytes.at("saved").to_number<std::uint64_t>() == 4 * 4096);
  CHECK(bytes.at("saved_fraction").to_number<double>() == Approx(4.0 / 14));
  CHECK(bytes.at("amplification").to_number<double>() == Approx(1.4));
  const auto& series = ov.at("series").as_object();
  CHECK(series.at("t_unix_ms").as_array().size() == 120);
  std::uint64_t sum = 0;
  for (const auto& x : series.at("from_registry").as_array()) sum += x.to_number<std::uint64_t>();
  CHECK(sum == 10 * 4096);

  auto hosts = json::parse(dashboard::hosts_json(v)).at("hosts").as_array();
  REQUIRE(hosts.size() == 2);
  const auto& ha = hosts[0].as_object();
  CHECK(ha.at("id").as_string() == "a");
  CHECK(ha.at("zone").as_string() == "z1");
  CHECK(ha.at("address").as_string() == "10.0.0.1:7401");
  CHECK(ha.at("online").as_bool());
  CHECK(ha.at("tasks").to_number<int>() == 1);
  CHECK(ha.at("last_seen_ago_ms").to_number<int>() == 2000);

  auto tasks = json::parse(dashboard::tasks_json(v)).at("tasks").as_array();
  REQUIRE(tasks.size() == 1);
  const auto& t = tasks[0].as_object();
  CHECK(t.at("id").as_string() == kTask);
  CHECK(t.at("digest").as_string() == "sha256:" + kTask);
  CHECK(t.at("content_length").to_number<int>() == 10 * 4096);
  CHECK(t.at("peer_counts").at("done").to_number<int>() == 1);
  CHECK(t.at("peer_counts").at("running").to_number<int>() == 1);
  CHECK(t.at("progress").to_number<double>() == Approx(14.0 / 20));
  CHECK(t.at("bytes_from_registry").to_number<int>() == 10 * 4096);
  CHECK(t.at("age_ms").to_number<int>() == 2000);

  CHECK_FALSE(dashboard::task_json(v, task_id(kTask2)));
  auto one = json::parse(*dashboard::task_json(v, task_id(kTask))).as_object();
  const auto& peers = one.at("peers").as_array();
  REQUIRE(peers.size() == 2);
  CHECK(peers[0].at("host_id").as_string() == "a");
  CHECK(peers[0].at("state").as_string() == "done");
  CHECK(peers[0].at("progress").to_number<double>() == 1.0);
  CHECK(peers[1].at("progress").to_number<double>() == Approx(0.4));
  CHECK(peers[1].at("bytes_from_peers").to_number<int>() == 4 * 4096);
  const auto& edges = one.at("edges").as_array();
  REQUIRE(edges.size() == 2);
  bool origin_edge = false, peer_edge = false;
  for (const auto& e : edges) {
    if (e.at("from").is_null()) {
      origin_edge = e.at("to").as_string() == "a" && e.at("bytes").to_number<int>() == 10 * 4096;
    } else {
      peer_edge = e.at("from").as_string() == "a" && e.at("to").as_string() == "b" &&
                  e.at("pieces").to_number<int>() == 4 && e.at("active").as_bool();
    }
  }
  CHECK(origin_edge);
  CHECK(peer_edge);

  // A host whose heartbeats stopped shows as offline before it expires.
  f.clk.advance(std::chrono::seconds(3 * f.e.options().announce_interval_seconds));
  auto later = json::parse(dashboard::hosts_json(v)).at("hosts").as_array();
  CHECK_FALSE(later[0].at("online").as_bool());
}

TEST_CASE("dashboard: token comparison", "[scheduler][dashboard]") {
  CHECK(dashboard::token_equal("abc", "abc"));
  CHECK_FALSE(dashboard::token_equal("abd", "abc"));
  CHECK_FALSE(dashboard::token_equal("ab", "abc"));
  CHECK_FALSE(dashboard::token_equal("abcd", "abc"));
  CHECK_FALSE(dashboard::token_equal("", "abc"));
  CHECK_FALSE(dashboard::token_equal("", ""));
}
