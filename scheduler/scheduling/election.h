#pragma once
// Source election (DESIGN §5): exactly one peer per task reads origin.

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>

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

// What makes a host a better source once the previous source and an
// announced address are equal: a seed, then in origin_zone (if set), then the
// faster (host::source_rate: announced link rate and rate limits). Larger is
// better.
using host_rank = std::tuple<bool, bool, std::uint64_t>;
host_rank source_host_rank(const host& h, std::string_view origin_zone);

// Picks the source among the task's running peers, skipping hosts in
// t.source.excluded and `also_exclude`. Order: the previous scheduler's source
// (was_source), then peers other peers can fetch from (announced address),
// then source_host_rank, then has_client, then earliest registration.
std::optional<host_id> elect_source(const registry& reg, const task& t, election_mode mode,
                                    const host_id* also_exclude = nullptr,
                                    std::string_view origin_zone = {});

}  // namespace shoal::scheduler
