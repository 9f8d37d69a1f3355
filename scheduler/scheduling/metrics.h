#pragma once
// Every shoal_scheduler_* metric, declared in one place. Values are atomics,
// so the HTTP thread may render while the owner thread updates.

#include <array>
#include <cstddef>

#include "common/metrics.h"
#include "shoal/v1/scheduler.pb.h"

namespace shoal::scheduler {

// Why a child's parents were computed (shoal_scheduler_parent_choices_total).
enum class choice_trigger {
  registered,        // its first choice
  parent_gone,       // a parent left or failed
  piece_failed,      // it reported a broken parent
  parent_useless,    // a parent has nothing left it lacks
  gateway,           // it became, or stopped being, its zone's gateway
  short_of_parents,  // fewer parents than wanted, and its task gained pieces or peers
  full_pass,         // the slow pass over every child
  other,             // the source changed hands (the new source, a stalled one)
};
inline constexpr std::size_t kChoiceTriggers = 8;

struct scheduler_metrics {
  explicit scheduler_metrics(metrics::registry& reg);

  metrics::gauge& hosts;
  metrics::gauge& tasks;
  metrics::gauge& peers;
  metrics::counter& from_origin;       // decisions_total{kind="from_origin"}
  metrics::counter& parents;           // decisions_total{kind="parents"}
  metrics::counter& digests;           // decisions_total{kind="digests"}
  metrics::counter& aborts;            // decisions_total{kind="abort"}
  metrics::counter& stop_from_origin;  // decisions_total{kind="stop_from_origin"}
  metrics::histogram& decision_latency;
  metrics::counter& source_elections;
  metrics::counter& poisoned_tasks;
  metrics::family<metrics::counter>& piece_failures;
  // parent_choices_total{trigger}, indexed by choice_trigger.
  std::array<metrics::counter*, kChoiceTriggers> parent_choices;

  // Counts one decision by its kind.
  void count(const v1::Decision& d);
  // Counts one PieceFailed by its reason.
  void count(v1::PieceFailed::Reason r);
  // Counts one parent choice by its trigger.
  void count(choice_trigger why) { parent_choices[static_cast<std::size_t>(why)]->inc(); }
  double choices(choice_trigger why) const {
    return parent_choices[static_cast<std::size_t>(why)]->value();
  }
};

}  // namespace shoal::scheduler
