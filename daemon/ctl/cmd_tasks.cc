// shoalctl tasks [ID]: the tasks (blobs) a scheduler tracks, or one task's
// peers and who fed whom, from its JSON API (/api/v1/tasks[/ID]).
#include <boost/json.hpp>
#include <iostream>

#include "common/digest.h"
#include "daemon/ctl/command.h"
#include "daemon/ctl/scheduler_api.h"

namespace {

namespace json = boost::json;

double num(const json::object& o, std::string_view k) { return shoal::ctl::json_number(o, k); }
std::string str(const json::object& o, std::string_view k) { return shoal::ctl::json_string(o, k); }

std::string percent(double f) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * f);
  return buf;
}

std::string count(double v) { return std::to_string(static_cast<long long>(v)); }

int run_tasks(const shoal::ctl::scheduler_api_options& o, const std::string& id) {
  using namespace shoal::ctl;
  std::string_view hex = id;
  if (hex.starts_with("sha256:")) hex.remove_prefix(7);
  if (!id.empty() && !shoal::is_sha256_hex(hex)) {
    std::cerr << "shoalctl tasks: '" << id
              << "' is not a task id (64 lowercase hex, or sha256:HEX)\n";
    return exit_usage;
  }
  auto body = scheduler_get(o, id.empty() ? "/api/v1/tasks" : "/api/v1/tasks/" + id);
  if (!body) {
    std::cerr << "shoalctl tasks: " << body.error().message << "\n";
    return exit_failure;
  }
  if (o.json) {
    std::cout << json::serialize(*body) << "\n";
    return exit_ok;
  }
  if (id.empty()) {
    std::vector<std::vector<std::string>> rows{{"DIGEST", "REPOSITORY", "SIZE", "DONE", "RUNNING",
                                                "PROGRESS", "REGISTRY", "PEERS", "STATE",
                                                "AGE"}};
    for (const auto& v : body->as_object().at("tasks").as_array()) {
      const auto& t = v.as_object();
      const auto& peers = t.at("peer_counts").as_object();
      std::string repo = str(t, "repository").empty() ? str(t, "url") : str(t, "repository");
      rows.push_back({str(t, "digest").substr(0, 19), repo.empty() ? "-" : repo,
                      human_bytes(num(t, "content_length")), count(num(peers, "done")),
                      count(num(peers, "running")), percent(num(t, "progress")),
                      human_bytes(num(t, "bytes_from_registry")),
                      human_bytes(num(t, "bytes_from_peers")), str(t, "state"),
                      human_duration_ms(num(t, "age_ms"))});
    }
    print_table(rows);
    return exit_ok;
  }
  const auto& t = body->as_object();
  std::cout << str(t, "digest") << "  " << str(t, "repository") << "  "
            << human_bytes(num(t, "content_length")) << "  " << str(t, "state") << "  "
            << percent(num(t, "progress")) << "  registry "
            << human_bytes(num(t, "bytes_from_registry")) << ", peers "
            << human_bytes(num(t, "bytes_from_peers")) << "\n\n";
  std::vector<std::vector<std::string>> rows{
      {"HOST", "STATE", "PROGRESS", "REGISTRY", "PEERS", "DOWN/s", "PARENTS"}};
  for (const auto& v : t.at("peers").as_array()) {
    const auto& p = v.as_object();
    std::string parents;
    for (const auto& x : p.at("parents").as_array())
      parents += (parents.empty() ? "" : ",") + std::string(x.as_string());
    rows.push_back({str(p, "host_id") + (p.at("source").as_bool() ? " (source)" : ""),
                    str(p, "state"), percent(num(p, "progress")),
                    human_bytes(num(p, "bytes_from_registry")),
                    human_bytes(num(p, "bytes_from_peers")), human_bytes(num(p, "download_rate")),
                    parents.empty() ? "-" : parents});
  }
  print_table(rows);
  std::cout << "\n";
  std::vector<std::vector<std::string>> edges{{"FROM", "TO", "BYTES", "PIECES"}};
  for (const auto& v : t.at("edges").as_array()) {
    const auto& e = v.as_object();
    edges.push_back({e.at("from").is_null() ? "registry" : str(e, "from"), str(e, "to"),
                     human_bytes(num(e, "bytes")), count(num(e, "pieces"))});
  }
  print_table(edges);
  return exit_ok;
}

shoal::ctl::registration reg{"tasks", [](CLI::App& app, shoal::ctl::runner& run) {
  auto* sub = app.add_subcommand(
      "tasks", "List the tasks (blobs) a scheduler tracks, or one task's peers and edges");
  auto o = std::make_shared<shoal::ctl::scheduler_api_options>();
  auto id = std::make_shared<std::string>();
  sub->add_option("id", *id, "a task id (blob digest hex, or sha256:HEX) to show its peers");
  shoal::ctl::add_scheduler_api_flags(sub, *o);
  run = [o, id] { return run_tasks(*o, *id); };
}};

}  // namespace
