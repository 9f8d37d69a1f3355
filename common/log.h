#pragma once
// Logging: spdlog, one line per event, one named logger per module.

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace shoal {

// Sets the level ("trace".."critical", "off") for every logger; returns false
// for an unknown level name.
bool init_logging(const std::string& level);
// The module's logger ("mirror", "storage", ...), created on first use.
std::shared_ptr<spdlog::logger> logger(const std::string& name);

}  // namespace shoal
