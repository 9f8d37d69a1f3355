#pragma once
// YAML config files for CLI11 apps: every flag is also a YAML key
// ("--data-dir" <-> "data-dir:" or "data_dir:"); a flag given on the command
// line wins over the file. Lists are YAML sequences.

#include <CLI/CLI.hpp>

namespace shoal {

// Installs a `--config PATH` option on app that reads YAML.
void add_yaml_config(CLI::App& app, const std::string& default_path = "");

}  // namespace shoal
