#include "scheduler/dashboard/views.h"

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <tuple>
#include <vector>

namespace shoal::scheduler::dashboard {

namespace json = boost::json;

namespace {

std::int64_t ms(duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

// Unix ms of t, or null for "never" (a default time_point).
json::value unix_or_null(const view_context& v, time_point t) {
  if (t == time_point{}) return nullptr;
  return v.clk.unix_ms(t);
}

// A host counts as online while its heartbeats arrive on time (two intervals
// of slack); after that it is stale until --host-ttl drops it.
bool online(const view_context& v, const host& h, time_point now) {
  const auto interval = std::chrono::seconds(v.state.options().announce_interval_seconds);
  return h.announced && now - h.last_seen <= 2 * interval;
}

std::string digest_of(const task& t) {
  if (!t.origin().digest().empty()) return t.origin().digest();
  return "sha256:" + t.id().str();
}

json::object task_summary(const view_context& v, const task& t, time_point now) {
  const registry& reg = v.state.state();
  std::uint32_t running = 0, done = 0, failed = 0;
  std::uint64_t held = 0, live = 0;
  for (const auto& [h, p] : t.peers()) {
    switch (p.state) {
      case peer_state::running: ++running; break;
      case peer_state::done: ++done; break;
      case peer_state::failed: ++failed; break;
    }
    if (p.live()) {
      ++live;
      held += p.finished.count();
    }
  }
  const double progress =
      live == 0 || t.piece_count() == 0
          ? (t.piece_count() == 0 ? 1.0 : 0.0)
          : static_cast<double>(held) / (static_cast<double>(live) * t.piece_count());
  json::object o;
  o["id"] = t.id().str();
  o["digest"] = digest_of(t);
  o["registry"] = t.origin().registry();
  o["repository"] = t.origin().repository();
  o["url"] = t.origin().url();
  o["content_length"] = t.content_length();
  o["piece_length"] = t.piece_length();
  o["piece_count"] = t.piece_count();
  o["state"] = std::string(to_string(t.state()));
  o["active"] = t.state() == task_state::running || running > 0;
  o["peer_counts"] = json::object{{"total", t.peers().size()},
                            {"running", running},
                            {"done", done},
                            {"failed", failed}};
  o["progress"] = progress;
  o["pieces_available"] = t.held_by_live_peers().count();
  o["digests_known"] = t.known().count();
  o["source"] = t.source.current ? json::value(t.source.current->str()) : json::value(nullptr);
  std::uint64_t from_origin = 0, from_peers = 0;
  if (const task_traffic* tt = reg.traffic().find_task(t.id())) {
    from_origin = tt->bytes.from_origin;
    from_peers = tt->bytes.from_peers;
  }
  o["bytes_from_registry"] = from_origin;
  o["bytes_from_peers"] = from_peers;
  o["created_unix_ms"] = v.clk.unix_ms(t.created());
  o["age_ms"] = ms(now - t.created());
  return o;
}

}  // namespace

std::string overview_json(const view_context& v) {
  const registry& reg = v.state.state();
  const time_point now = v.clk.now();
  std::size_t hosts_online = 0;
  for (const auto& [id, h] : reg.hosts())
    if (online(v, h, now)) ++hosts_online;
  std::size_t tasks_active = 0;
  for (const auto& [id, t] : reg.tasks()) {
    bool active = t.state() == task_state::running;
    for (const auto& [h, p] : t.peers()) active = active || p.state == peer_state::running;
    if (active) ++tasks_active;
  }
  const traffic_stats& tr = reg.traffic();
  const byte_split& tot = tr.totals();
  const byte_split rate = tr.rate(now);

  json::object o;
  o["version"] = v.version;
  o["now_unix_ms"] = v.clk.unix_ms(now);
  o["started_unix_ms"] = v.clk.unix_ms(v.started);
  o["uptime_ms"] = ms(now - v.started);
  o["features"] = json::object{{"preheat", v.preheat}};
  o["hosts"] = json::object{{"online", hosts_online}, {"total", reg.hosts().size()}};
  o["tasks"] = json::object{{"active", tasks_active}, {"total", reg.tasks().size()}};
  o["peers"] = reg.peer_count();
  json::object bytes;
  bytes["delivered"] = tot.total();
  bytes["from_registry"] = tot.from_origin;
  bytes["from_peers"] = tot.from_peers;
  // What the registry did not have to serve: every byte a peer got from another peer.
  bytes["saved"] = tot.from_peers;
  bytes["saved_fraction"] =
      tot.total() == 0 ? 0.0 : static_cast<double>(tot.from_peers) / static_cast<double>(tot.total());
  // Bytes delivered per byte read from the registry (null before any registry read).
  bytes["amplification"] = tot.from_origin == 0
                               ? json::value(nullptr)
                               : json::value(static_cast<double>(tot.total()) /
                                             static_cast<double>(tot.from_origin));
  o["bytes"] = std::move(bytes);
  o["throughput"] = json::object{{"from_registry", rate.from_origin},
                                 {"from_peers", rate.from_peers},
                                 {"window_ms", traffic_stats::rate_window_seconds * 1000}};
  json::array t, from_origin, from_peers;
  for (const auto& p : tr.series(now, v.chart_seconds)) {
    t.push_back(v.clk.unix_ms(p.at));
    from_origin.push_back(p.bytes.from_origin);
    from_peers.push_back(p.bytes.from_peers);
  }
  o["series"] = json::object{{"interval_ms", 1000},
                             {"t_unix_ms", std::move(t)},
                             {"from_registry", std::move(from_origin)},
                             {"from_peers", std::move(from_peers)}};
  return json::serialize(o);
}

std::string hosts_json(const view_context& v) {
  const registry& reg = v.state.state();
  const time_point now = v.clk.now();
  json::array hosts;
  for (const auto& [id, h] : reg.hosts()) {
    const v1::Host& i = h.info;
    const auto rates = reg.traffic().rates(id, now);
    json::object o;
    o["id"] = id.str();
    o["hostname"] = i.hostname();
    o["zone"] = i.zone();
    o["address"] = i.peer_addr();
    o["seed"] = i.seed();
    o["version"] = i.version();
    o["online"] = online(v, h, now);
    o["announced"] = h.announced;
    o["download_rate"] = rates.download;
    o["upload_rate"] = rates.upload;
    o["reported_upload_rate"] = i.upload_rate();
    o["download_rate_limit"] = i.download_rate_limit();
    o["upload_rate_limit"] = i.upload_rate_limit();
    o["upload_slots"] = i.upload_slots();
    o["upload_slots_in_use"] = i.upload_slots_in_use();
    o["disk_total_bytes"] = i.disk_total_bytes();
    o["disk_free_bytes"] = i.disk_free_bytes();
    o["cache_bytes"] = i.cache_bytes();
    o["tasks"] = h.tasks.size();
    o["first_seen_unix_ms"] = v.clk.unix_ms(h.first_seen);
    o["last_seen_unix_ms"] = v.clk.unix_ms(h.last_seen);
    o["last_seen_ago_ms"] = ms(now - h.last_seen);
    hosts.push_back(std::move(o));
  }
  return json::serialize(json::object{{"hosts", std::move(hosts)}});
}

std::string tasks_json(const view_context& v) {
  const time_point now = v.clk.now();
  json::array tasks;
  for (const auto& [id, t] : v.state.state().tasks()) tasks.push_back(task_summary(v, t, now));
  return json::serialize(json::object{{"tasks", std::move(tasks)}});
}

std::optional<std::string> task_json(const view_context& v, const task_id& id) {
  const registry& reg = v.state.state();
  const task* t = reg.find_task(id);
  if (t == nullptr) return std::nullopt;
  const time_point now = v.clk.now();
  json::object o = task_summary(v, *t, now);
  const duration window = v.state.options().evaluation.failure_window;
  json::array peers;
  for (const auto& [hid, p] : t->peers()) {
    const host* h = reg.find_host(hid);
    json::object po;
    po["host_id"] = hid.str();
    po["zone"] = h ? h->info.zone() : "";
    po["address"] = h ? h->info.peer_addr() : "";
    po["state"] = std::string(to_string(p.state));
    po["source"] = p.is_source;
    po["finished_pieces"] = p.finished.count();
    po["progress"] = t->piece_count() == 0 ? 1.0
                                           : static_cast<double>(p.finished.count()) /
                                                 static_cast<double>(t->piece_count());
    po["bytes_from_registry"] = p.bytes_from_origin;
    po["bytes_from_peers"] = p.bytes_from_peers;
    json::array parents;
    for (const auto& ph : p.parents) parents.push_back(json::value(ph.str()));
    po["parents"] = std::move(parents);
    po["children"] = p.children;
    po["failures"] = p.recent_failures(now, window);
    po["download_rate"] = reg.traffic().rates(hid, now).download;
    po["registered_unix_ms"] = v.clk.unix_ms(p.registered_at);
    po["last_piece_unix_ms"] = unix_or_null(v, p.last_piece_at);
    peers.push_back(std::move(po));
  }
  o["peers"] = std::move(peers);
  json::array edges;
  if (const task_traffic* tt = reg.traffic().find_task(id)) {
    // By (parent, child), so the view is stable (the index is unordered).
    std::vector<const traffic_edge*> sorted;
    sorted.reserve(tt->edges.size());
    for (const auto& [key, e] : tt->edges) sorted.push_back(&e);
    std::sort(sorted.begin(), sorted.end(), [](const traffic_edge* a, const traffic_edge* b) {
      return std::tie(a->parent, a->child) < std::tie(b->parent, b->child);
    });
    for (const traffic_edge* ep : sorted) {
      const traffic_edge& e = *ep;
      json::object eo;
      eo["from"] = e.parent.empty() ? json::value(nullptr) : json::value(e.parent.str());
      eo["to"] = e.child.str();
      eo["bytes"] = e.bytes;
      eo["pieces"] = e.pieces;
      eo["first_unix_ms"] = v.clk.unix_ms(e.first);
      eo["last_unix_ms"] = v.clk.unix_ms(e.last);
      eo["active"] = now - e.last <= std::chrono::seconds(3);
      edges.push_back(std::move(eo));
    }
  }
  o["edges"] = std::move(edges);
  return json::serialize(o);
}

json::object preheat_object(const v1::PreheatJob& j) {
  json::object o;
  o["id"] = j.id();
  o["reference"] = j.reference();
  o["state"] = j.state();
  o["manifest_digest"] = j.manifest_digest();
  o["blobs_total"] = j.blobs_total();
  o["bytes_total"] = j.bytes_total();
  o["bytes_done"] = j.bytes_done();
  const double want = static_cast<double>(j.bytes_total()) * j.seeds_size();
  o["progress"] = j.state() == "succeeded" ? 1.0
                  : want > 0               ? std::min(1.0, static_cast<double>(j.bytes_done()) / want)
                                           : 0.0;
  std::uint32_t blobs_done = 0;
  json::array seeds;
  for (const auto& s : j.seeds()) {
    blobs_done += s.blobs_done();
    seeds.push_back(json::object{{"host_id", s.host_id()},
                                 {"state", s.state()},
                                 {"blobs_total", s.blobs_total()},
                                 {"blobs_done", s.blobs_done()},
                                 {"bytes_total", s.bytes_total()},
                                 {"bytes_done", s.bytes_done()},
                                 {"error", s.error()},
                                 {"updated_unix_ms", s.updated_unix_ms()}});
  }
  o["blobs_done"] = blobs_done;  // summed over seeds, like bytes_done
  o["seeds"] = std::move(seeds);
  o["error"] = j.error();
  o["created_unix_ms"] = j.created_unix_ms();
  o["finished_unix_ms"] =
      j.finished_unix_ms() == 0 ? json::value(nullptr) : json::value(j.finished_unix_ms());
  return o;
}

std::string preheat_json(const v1::PreheatJob& j) { return json::serialize(preheat_object(j)); }

std::string preheats_json(const v1::ListPreheatsResponse& l) {
  json::array jobs;
  for (const auto& j : l.jobs()) jobs.push_back(preheat_object(j));
  return json::serialize(json::object{{"preheats", std::move(jobs)}});
}

}  // namespace shoal::scheduler::dashboard
