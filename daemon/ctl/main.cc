// shoalctl: the command line for Shoal (pull, push, preheat, inspect, ...).
// Subcommands live in cmd_*.cc and register themselves (command.h).

#include <algorithm>
#include <iostream>
#include <list>

#include "common/log.h"
#include "daemon/ctl/command.h"

namespace shoal::ctl {
std::vector<command_entry>& commands() {
  static std::vector<command_entry> all;
  return all;
}
}  // namespace shoal::ctl

int main(int argc, char** argv) {
  using namespace shoal::ctl;
  CLI::App app{"shoalctl: pull, push and preheat models through Shoal, and inspect a cluster"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  auto& all = commands();
  std::sort(all.begin(), all.end(),
            [](const command_entry& a, const command_entry& b) { return a.name < b.name; });
  std::list<runner> runners;  // stable addresses for the setups
  for (auto& c : all) c.setup(app, runners.emplace_back());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!shoal::init_logging(log_level)) {
    std::cerr << "shoalctl: unknown --log-level '" << log_level << "'\n";
    return exit_usage;
  }
  auto chosen = app.get_subcommands();
  auto it = runners.begin();
  for (auto& c : all) {
    for (auto* sub : chosen)
      if (sub->get_name() == c.name && *it) return (*it)();
    ++it;
  }
  std::cerr << "shoalctl: no command chosen (try --help)\n";
  return exit_usage;
}
