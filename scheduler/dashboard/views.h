#pragma once
// The dashboard's JSON documents (/api/v1/...), rendered from the scheduler's
// state. Pure functions of (engine state, clock): no I/O, so they are unit
// tested with a hand-built engine and a manual clock. Call on the owner
// thread only (they read the engine's registry).
//
// Field names and units are the API contract documented in
// scheduler/dashboard/README.md: bytes are integers, rates bytes per second,
// times Unix milliseconds (`*_unix_ms`) or milliseconds (`*_ms`).

#include <cstddef>
#include <optional>
#include <string>

#include <boost/json/object.hpp>

#include "scheduler/resource/clock.h"
#include "scheduler/resource/ids.h"
#include "scheduler/scheduling/engine.h"

namespace shoal::scheduler::dashboard {

struct view_context {
  const engine& state;
  const clock& clk;
  std::string version;            // the scheduler's version, shown in the page footer
  time_point started{};           // when the scheduler started
  std::size_t chart_seconds = 120;  // points in the overview's throughput series
  bool preheat = false;             // a preheat backend is wired (the page shows its form)
};

// GET /api/v1/overview: hosts online, active tasks, bytes delivered vs read
// from the registry and the savings, current throughput and its recent series.
std::string overview_json(const view_context& v);
// GET /api/v1/hosts: every host the scheduler knows.
std::string hosts_json(const view_context& v);
// GET /api/v1/tasks: every task with its peers' counts and progress.
std::string tasks_json(const view_context& v);
// GET /api/v1/tasks/{id}: one task, each peer's progress and the parent -> child
// edges; nullopt when the task is unknown.
std::optional<std::string> task_json(const view_context& v, const task_id& id);
// A preheat job (POST /api/v1/preheat, GET /api/v1/preheat/{id}) with its
// seeds; `progress` is bytes done over bytes to do on every seed (0 until a
// seed resolved the manifest).
boost::json::object preheat_object(const v1::PreheatJob& j);
std::string preheat_json(const v1::PreheatJob& j);
// GET /api/v1/preheat.
std::string preheats_json(const v1::ListPreheatsResponse& l);

}  // namespace shoal::scheduler::dashboard
