#pragma once
// Source election (DESIGN §5): exactly one peer per task reads origin.

#include <optional>
#include <string_view>

#include "scheduler/resource/ids.h"
#include "scheduler/resource/registry.h"
#include "scheduler/resource/task.h"

namespace shoal::scheduler {

enum class election_mode {
  // No source was ever elected: only a peer that can read origin for a client
  // (has_client), a seed, or the previous scheduler's source qualifies.
  initial,
  // The source left, stalled or failed: any running peer qualifies.
  replacement,
};

// Picks the source among the task's running peers, skipping hosts in
// t.source.excluded and `also_exclude`. Order: the previous scheduler's source
// (was_source), then peers other peers can fetch from (announced address),
// then seed hosts, then the origin zone, then the faster host, then
// has_client, then earliest registration.
// With origin_zone set, a peer in that zone comes after seeds; then the
// faster host (host::source_rate: announced link rate and rate limits), then
// has_client (see engine_options::origin_zone).
std::optional<host_id> elect_source(const registry& reg, const task& t, election_mode mode,
                                    const host_id* also_exclude = nullptr,
                                    std::string_view origin_zone = {});

}  // namespace shoal::scheduler
