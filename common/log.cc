#include "common/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <array>
#include <mutex>
#include <utility>

namespace shoal {
namespace {

constexpr const char* kPattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v";

// Serialises get-or-create so two threads asking for a new module's logger do
// not both try to register it (spdlog throws on a duplicate name).
std::mutex& logger_mutex() {
  static std::mutex mu;
  return mu;
}

// spdlog copies the registry-wide formatter into each logger it registers, so
// setting it once covers loggers made later too.
void ensure_pattern() {
  static std::once_flag once;
  std::call_once(once, [] { spdlog::set_pattern(kPattern); });
}

}  // namespace

bool init_logging(const std::string& level) {
  // spdlog::level::from_str maps unknown names to "off", which would silently
  // hide every log line; only accept the names it really knows.
  static constexpr std::array<std::pair<const char*, spdlog::level::level_enum>, 9> kLevels = {{
      {"trace", spdlog::level::trace},
      {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},
      {"warn", spdlog::level::warn},
      {"warning", spdlog::level::warn},
      {"err", spdlog::level::err},
      {"error", spdlog::level::err},
      {"critical", spdlog::level::critical},
      {"off", spdlog::level::off},
  }};
  for (const auto& [name, lvl] : kLevels) {
    if (level == name) {
      ensure_pattern();
      spdlog::set_level(lvl);
      return true;
    }
  }
  return false;
}

std::shared_ptr<spdlog::logger> logger(const std::string& name) {
  std::lock_guard lock(logger_mutex());
  if (auto existing = spdlog::get(name)) return existing;
  ensure_pattern();
  return spdlog::stderr_color_mt(name);
}

}  // namespace shoal
