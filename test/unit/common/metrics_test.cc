#include "common/metrics.h"

#include <catch2/catch.hpp>
#include <thread>

namespace m = shoal::metrics;

TEST_CASE("metrics render counters, gauges and histograms sorted by name", "[metrics]") {
  m::registry r;
  auto& requests =
      r.add_counter("shoal_test_requests_total", "Requests served.", {"method", "code"});
  requests.with({"GET", "200"}).inc();
  requests.with({"GET", "200"}).inc(2);
  requests.with({"HEAD", "404"}).inc();

  auto& bytes = r.add_gauge("shoal_test_cache_bytes", "Bytes in the cache.");
  bytes.with().set(1536);
  bytes.with().add(0.5);

  auto& latency = r.add_histogram("shoal_test_latency_seconds", "Request latency.", {0.25, 1});
  latency.with().observe(0.125);
  latency.with().observe(0.25);
  latency.with().observe(0.5);
  latency.with().observe(2);

  CHECK(r.render() ==
        "# HELP shoal_test_cache_bytes Bytes in the cache.\n"
        "# TYPE shoal_test_cache_bytes gauge\n"
        "shoal_test_cache_bytes 1536.5\n"
        "# HELP shoal_test_latency_seconds Request latency.\n"
        "# TYPE shoal_test_latency_seconds histogram\n"
        "shoal_test_latency_seconds_bucket{le=\"0.25\"} 2\n"
        "shoal_test_latency_seconds_bucket{le=\"1\"} 3\n"
        "shoal_test_latency_seconds_bucket{le=\"+Inf\"} 4\n"
        "shoal_test_latency_seconds_sum 2.875\n"
        "shoal_test_latency_seconds_count 4\n"
        "# HELP shoal_test_requests_total Requests served.\n"
        "# TYPE shoal_test_requests_total counter\n"
        "shoal_test_requests_total{method=\"GET\",code=\"200\"} 3\n"
        "shoal_test_requests_total{method=\"HEAD\",code=\"404\"} 1\n");
}

TEST_CASE("metrics histogram with labels puts le last", "[metrics]") {
  m::registry r;
  auto& h = r.add_histogram("shoal_test_size_bytes", "Sizes.", {1024, 4096}, {"kind"});
  h.with({"blob"}).observe(4096);
  h.with({"blob"}).observe(8192);
  CHECK(r.render() ==
        "# HELP shoal_test_size_bytes Sizes.\n"
        "# TYPE shoal_test_size_bytes histogram\n"
        "shoal_test_size_bytes_bucket{kind=\"blob\",le=\"1024\"} 0\n"
        "shoal_test_size_bytes_bucket{kind=\"blob\",le=\"4096\"} 1\n"
        "shoal_test_size_bytes_bucket{kind=\"blob\",le=\"+Inf\"} 2\n"
        "shoal_test_size_bytes_sum{kind=\"blob\"} 12288\n"
        "shoal_test_size_bytes_count{kind=\"blob\"} 2\n");
  CHECK(h.with({"blob"}).buckets() == std::vector<std::uint64_t>{0, 1, 2});
}

TEST_CASE("metrics without labels render 0 before use, labelled ones render no samples",
          "[metrics]") {
  m::registry r;
  r.add_counter("shoal_test_b_total", "B.");
  r.add_counter("shoal_test_a_total", "A.", {"peer"});
  r.add_histogram("shoal_test_c_seconds", "C.", {1});
  CHECK(r.render() ==
        "# HELP shoal_test_a_total A.\n"
        "# TYPE shoal_test_a_total counter\n"
        "# HELP shoal_test_b_total B.\n"
        "# TYPE shoal_test_b_total counter\n"
        "shoal_test_b_total 0\n"
        "# HELP shoal_test_c_seconds C.\n"
        "# TYPE shoal_test_c_seconds histogram\n"
        "shoal_test_c_seconds_bucket{le=\"1\"} 0\n"
        "shoal_test_c_seconds_bucket{le=\"+Inf\"} 0\n"
        "shoal_test_c_seconds_sum 0\n"
        "shoal_test_c_seconds_count 0\n");
}

TEST_CASE("metrics escape label values and help text", "[metrics]") {
  m::registry r;
  auto& c = r.add_counter("shoal_test_escape_total", "Line one\nback\\slash \"quoted\".", {"path"});
  c.with({"a\\b\"c\nd"}).inc();
  CHECK(r.render() ==
        "# HELP shoal_test_escape_total Line one\\nback\\\\slash \"quoted\".\n"
        "# TYPE shoal_test_escape_total counter\n"
        "shoal_test_escape_total{path=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST_CASE("metrics families are shared by name and checked", "[metrics]") {
  m::registry r;
  auto& a = r.add_counter("shoal_test_x_total", "X.", {"k"});
  auto& b = r.add_counter("shoal_test_x_total", "X.", {"k"});
  CHECK(&a == &b);
  CHECK(&a.with({"v"}) == &b.with({"v"}));
  CHECK_THROWS_AS(r.add_gauge("shoal_test_x_total", "X."), std::invalid_argument);
  CHECK_THROWS_AS(r.add_counter("shoal_test_x_total", "X.", {"other"}), std::invalid_argument);
  CHECK_THROWS_AS(a.with({}), std::invalid_argument);
}

TEST_CASE("metrics counters ignore negative increments and count across threads", "[metrics]") {
  m::registry r;
  auto& c = r.add_counter("shoal_test_threads_total", "T.").with();
  c.inc(-5);
  CHECK(c.value() == 0);
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c] {
      for (int i = 0; i < 10000; ++i) c.inc();
    });
  }
  for (auto& t : threads) t.join();
  CHECK(c.value() == 40000);
}

TEST_CASE("exponential_buckets", "[metrics]") {
  CHECK(m::exponential_buckets(1, 2, 4) == std::vector<double>{1, 2, 4, 8});
  CHECK(m::exponential_buckets(1, 2, 0).empty());
}
