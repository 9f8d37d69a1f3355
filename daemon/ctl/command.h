#pragma once
// shoalctl's subcommands register themselves: each command lives in its own
// file (cmd_<name>.cc) and declares
//
//   static shoal::ctl::registration reg{"pull", [](CLI::App& app, shoal::ctl::runner& run) {
//     auto* sub = app.add_subcommand("pull", "...");
//     ... options ...
//     run = [=] { return do_pull(...); };   // exit code
//   }};
//
// main.cc builds the CLI from every registration, parses, and calls the
// runner of the chosen subcommand. Commands never call exit().

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace shoal::ctl {

// What a chosen subcommand does; returns the process exit code.
using runner = std::function<int()>;
// Adds one subcommand to `app` and sets `run`.
using setup_fn = void (*)(CLI::App& app, runner& run);

struct command_entry {
  std::string name;
  setup_fn setup;
};

// Every registered command, in name order.
std::vector<command_entry>& commands();

struct registration {
  registration(std::string name, setup_fn f) { commands().push_back({std::move(name), f}); }
};

// Exit codes shared by every command.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;  // the operation failed (message on stderr)
inline constexpr int exit_usage = 2;    // bad flags or arguments

}  // namespace shoal::ctl
