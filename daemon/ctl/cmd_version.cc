// shoalctl version: prints the version of this build.
#include <iostream>

#include "daemon/ctl/command.h"

namespace {
shoal::ctl::registration reg{"version", [](CLI::App& app, shoal::ctl::runner& run) {
  app.add_subcommand("version", "Print shoalctl's version");
  run = [] {
    std::cout << "shoalctl " << SHOAL_VERSION << "\n";
    return shoal::ctl::exit_ok;
  };
}};
}  // namespace
