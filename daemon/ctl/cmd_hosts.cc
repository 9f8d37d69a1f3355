// shoalctl hosts: the hosts a scheduler knows, from its JSON API (/api/v1/hosts).
#include <boost/json.hpp>
#include <iostream>

#include "daemon/ctl/command.h"
#include "daemon/ctl/scheduler_api.h"

namespace {

namespace json = boost::json;

double num(const json::object& o, std::string_view k) { return shoal::ctl::json_number(o, k); }
std::string str(const json::object& o, std::string_view k) { return shoal::ctl::json_string(o, k); }

int run_hosts(const shoal::ctl::scheduler_api_options& o) {
  using namespace shoal::ctl;
  auto body = scheduler_get(o, "/api/v1/hosts");
  if (!body) {
    std::cerr << "shoalctl hosts: " << body.error().message << "\n";
    return exit_failure;
  }
  if (o.json) {
    std::cout << json::serialize(*body) << "\n";
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows{{"HOST", "ZONE", "ADDRESS", "DOWN/s", "UP/s",
                                              "SLOTS", "DISK USED", "CACHE", "VERSION",
                                              "LAST SEEN"}};
  for (const auto& v : body->as_object().at("hosts").as_array()) {
    const auto& h = v.as_object();
    const double total = num(h, "disk_total_bytes");
    const bool online = h.contains("online") && h.at("online").as_bool();
    rows.push_back({
        str(h, "id") + (h.contains("seed") && h.at("seed").as_bool() ? " (seed)" : ""),
        str(h, "zone").empty() ? "-" : str(h, "zone"),
        str(h, "address").empty() ? "-" : str(h, "address"),
        human_bytes(num(h, "download_rate")),
        human_bytes(num(h, "upload_rate")),
        num(h, "upload_slots") > 0
            ? std::to_string(static_cast<long>(num(h, "upload_slots_in_use"))) + "/" +
                  std::to_string(static_cast<long>(num(h, "upload_slots")))
            : "-",
        total > 0 ? human_bytes(total - num(h, "disk_free_bytes")) + "/" + human_bytes(total)
                  : "-",
        human_bytes(num(h, "cache_bytes")),
        str(h, "version").empty() ? "-" : str(h, "version"),
        human_duration_ms(num(h, "last_seen_ago_ms")) + " ago" + (online ? "" : " (offline)"),
    });
  }
  print_table(rows);
  return exit_ok;
}

shoal::ctl::registration reg{"hosts", [](CLI::App& app, shoal::ctl::runner& run) {
  auto* sub = app.add_subcommand("hosts", "List the hosts a scheduler knows (its JSON API)");
  auto o = std::make_shared<shoal::ctl::scheduler_api_options>();
  shoal::ctl::add_scheduler_api_flags(sub, *o);
  run = [o] { return run_hosts(*o); };
}};

}  // namespace
