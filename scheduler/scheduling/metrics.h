#pragma once
// Every shoal_scheduler_* metric, declared in one place. Values are atomics,
// so the HTTP thread may render while the owner thread updates.

#include "common/metrics.h"
#include "shoal/v1/scheduler.pb.h"

namespace shoal::scheduler {

// Why a child's parents were computed again (shoal_scheduler_rescores_total).
enum class rescore_trigger { event, short_of_parents, full_pass };

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
  metrics::counter& rescore_event;             // rescores_total{trigger="event"}
  metrics::counter& rescore_short_of_parents;  // rescores_total{trigger="short_of_parents"}
  metrics::counter& rescore_full_pass;         // rescores_total{trigger="full_pass"}

  // Counts one decision by its kind.
  void count(const v1::Decision& d);
  // Counts one PieceFailed by its reason.
  void count(v1::PieceFailed::Reason r);
  // Counts one re-scoring of a child by its trigger.
  void count(rescore_trigger why);
};

}  // namespace shoal::scheduler
