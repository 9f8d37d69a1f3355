#pragma once
// Test helpers for the scheduler: a decision sink that records, a fixture
// with a manual clock, and builders for events.

#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "scheduler/resource/clock.h"
#include "scheduler/scheduling/engine.h"
#include "scheduler/scheduling/metrics.h"
#include "shoal/v1/scheduler.pb.h"

namespace shoal::scheduler::test {

// A 64-hex digest that differs per (seed, i).
inline std::string sha(std::uint32_t i, char seed = 'a') {
  std::string s(64, seed);
  std::string n = std::to_string(i);
  std::copy(n.begin(), n.end(), s.end() - static_cast<std::ptrdiff_t>(n.size()));
  return s;
}
inline const std::string kTask = std::string(64, 'e');
inline const std::string kTask2 = std::string(64, 'f');

// Records decisions like the service would write them: nothing after close().
class recording_sink final : public decision_sink {
 public:
  void send(stream_id s, v1::Decision d) override {
    if (closed_.contains(s)) return;
    sent_.push_back({s, std::move(d)});
  }
  void close(stream_id s) override { closed_.insert(s); }

  bool closed(stream_id s) const { return closed_.contains(s); }
  // Decisions sent to s since the last take(s), in order.
  std::vector<v1::Decision> take(stream_id s) {
    std::vector<v1::Decision> out;
    auto it = std::stable_partition(sent_.begin(), sent_.end(),
                                    [&](const entry& e) { return e.s != s; });
    for (auto i = it; i != sent_.end(); ++i) out.push_back(std::move(i->d));
    sent_.erase(it, sent_.end());
    return out;
  }
  void clear() { sent_.clear(); }

 private:
  struct entry {
    stream_id s;
    v1::Decision d;
  };
  std::vector<entry> sent_;
  std::set<stream_id> closed_;
};

inline std::vector<std::uint32_t> pieces_of(const v1::FetchFromOrigin& f) {
  return {f.pieces().begin(), f.pieces().end()};
}
inline std::vector<std::string> hosts_of(const v1::Parents& p) {
  std::vector<std::string> out;
  for (const auto& x : p.parents()) out.push_back(x.host_id());
  std::sort(out.begin(), out.end());
  return out;
}
// A copy of the last decision of a kind in ds (ds is often a temporary).
inline std::optional<v1::Decision> last_of(const std::vector<v1::Decision>& ds,
                                           v1::Decision::DecisionCase c) {
  std::optional<v1::Decision> out;
  for (const auto& d : ds)
    if (d.decision_case() == c) out = d;
  return out;
}
inline std::size_t count_of(const std::vector<v1::Decision>& ds, v1::Decision::DecisionCase c) {
  return static_cast<std::size_t>(
      std::count_if(ds.begin(), ds.end(), [&](const v1::Decision& d) { return d.decision_case() == c; }));
}

struct host_spec {
  std::string zone{};
  bool seed = false;
  std::uint64_t upload_limit = 0;
  std::uint64_t upload_rate = 0;
  std::uint64_t link_rate = 0;
};

struct register_spec {
  std::string task = kTask;
  std::uint64_t content_length = 10 * 4096;  // 10 pieces
  std::uint32_t piece_length = 4096;
  bool has_client = true;
  bool was_source = false;
  std::string registry{};  // Origin.registry
  std::string bitmap{};
  std::vector<std::pair<std::uint32_t, std::string>> known{};
};

struct fixture {
  explicit fixture(engine_options o = {}, std::uint64_t seed = 42)
      : m(reg), e(o, clk, sink, m, seed) {}

  void announce(const std::string& id, host_spec h = {}) {
    v1::Host info;
    info.set_id(id);
    info.set_peer_addr("10.0.0." + std::to_string(id.size()) + ":7401");
    info.set_zone(h.zone);
    info.set_seed(h.seed);
    info.set_upload_rate_limit(h.upload_limit);
    info.set_upload_rate(h.upload_rate);
    info.set_link_rate(h.link_rate);
    auto r = e.announce_host(info);
    REQUIRE(r);
  }
  stream_id open() { return stream_id{next_++}; }
  stream_id join(const std::string& host, register_spec r = {}) {
    stream_id s = open();
    v1::PeerEvent ev;
    auto* reg_ev = ev.mutable_register_();
    reg_ev->set_host_id(host);
    reg_ev->set_task_id(r.task);
    reg_ev->set_content_length(r.content_length);
    reg_ev->set_piece_length(r.piece_length);
    reg_ev->set_has_client(r.has_client);
    reg_ev->set_was_source(r.was_source);
    reg_ev->mutable_origin()->set_registry(r.registry);
    reg_ev->set_finished_bitmap(r.bitmap);
    for (const auto& [i, d] : r.known) {
      auto* kd = reg_ev->add_known_digests();
      kd->set_index(i);
      kd->set_sha256(d);
    }
    e.on_event(s, ev);
    return s;
  }
  void finished(stream_id s, std::uint32_t i, const std::string& digest,
                const std::string& parent = "") {
    v1::PeerEvent ev;
    ev.mutable_piece_finished()->set_index(i);
    ev.mutable_piece_finished()->set_sha256(digest);
    ev.mutable_piece_finished()->set_parent_host_id(parent);
    e.on_event(s, ev);
  }
  void failed_piece(stream_id s, std::uint32_t i, const std::string& parent,
                    v1::PieceFailed::Reason reason) {
    v1::PeerEvent ev;
    ev.mutable_piece_failed()->set_index(i);
    ev.mutable_piece_failed()->set_parent_host_id(parent);
    ev.mutable_piece_failed()->set_reason(reason);
    e.on_event(s, ev);
  }
  void source_finished(stream_id s, bool verified) {
    v1::PeerEvent ev;
    ev.mutable_source_finished()->set_verified(verified);
    ev.mutable_source_finished()->set_sha256(std::string(64, '0'));
    e.on_event(s, ev);
  }
  void done(stream_id s) {
    v1::PeerEvent ev;
    ev.mutable_done();
    e.on_event(s, ev);
  }
  void fail(stream_id s, const std::string& msg) {
    v1::PeerEvent ev;
    ev.mutable_failed()->set_message(msg);
    e.on_event(s, ev);
  }
  v1::TaskInfo stat(const std::string& task = kTask) {
    auto r = e.stat_task(task_id(task));
    REQUIRE(r);
    return *r;
  }
  const v1::PeerInfo* peer_info(const v1::TaskInfo& t, const std::string& host) {
    for (const auto& p : t.peers())
      if (p.host_id() == host) return &p;
    return nullptr;
  }

  manual_clock clk;
  metrics::registry reg;
  scheduler_metrics m;
  recording_sink sink;
  engine e;
  std::uint64_t next_ = 1;
};

}  // namespace shoal::scheduler::test
