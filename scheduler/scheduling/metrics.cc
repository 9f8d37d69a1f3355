#include "scheduler/scheduling/metrics.h"

#include <cctype>
#include <string>

namespace shoal::scheduler {

namespace {

metrics::family<metrics::counter>& decisions_family(metrics::registry& reg) {
  return reg.add_counter("shoal_scheduler_decisions_total",
                         "Decisions sent to peers, by kind.", {"kind"});
}

std::array<metrics::counter*, kChoiceTriggers> choices_family(metrics::registry& reg) {
  auto& f = reg.add_counter(
      "shoal_scheduler_parent_choices_total",
      "Parent choices computed for downloading peers, by what triggered them.", {"trigger"});
  // In choice_trigger's order.
  const char* names[kChoiceTriggers] = {"registered",     "parent_gone", "piece_failed",
                                        "parent_useless", "gateway",     "short_of_parents",
                                        "full_pass",      "other"};
  std::array<metrics::counter*, kChoiceTriggers> out{};
  for (std::size_t i = 0; i < kChoiceTriggers; ++i) out[i] = &f.with({names[i]});
  return out;
}

}  // namespace

scheduler_metrics::scheduler_metrics(metrics::registry& reg)
    : hosts(reg.add_gauge("shoal_scheduler_hosts", "Hosts known (announced and not expired).")
                .with()),
      tasks(reg.add_gauge("shoal_scheduler_tasks", "Tasks with at least one peer.").with()),
      peers(reg.add_gauge("shoal_scheduler_peers", "Peers (open AnnouncePeer streams).").with()),
      from_origin(decisions_family(reg).with({"from_origin"})),
      parents(decisions_family(reg).with({"parents"})),
      digests(decisions_family(reg).with({"digests"})),
      aborts(decisions_family(reg).with({"abort"})),
      stop_from_origin(decisions_family(reg).with({"stop_from_origin"})),
      decision_latency(reg.add_histogram("shoal_scheduler_decision_latency_seconds",
                                         "Time from receiving a peer event to having decided on it "
                                         "(queueing on the owner thread included).",
                                         metrics::exponential_buckets(0.00001, 4, 10))
                           .with()),
      source_elections(reg.add_counter("shoal_scheduler_source_elections_total",
                                       "Source peers elected (first and re-elections).")
                           .with()),
      poisoned_tasks(reg.add_counter("shoal_scheduler_poisoned_tasks_total",
                                     "Tasks dropped because their content failed verification.")
                         .with()),
      piece_failures(reg.add_counter("shoal_scheduler_piece_failures_total",
                                     "PieceFailed reports from children, by reason.", {"reason"})),
      parent_choices(choices_family(reg)) {}

void scheduler_metrics::count(const v1::Decision& d) {
  switch (d.decision_case()) {
    case v1::Decision::kFromOrigin: from_origin.inc(); break;
    case v1::Decision::kParents: parents.inc(); break;
    case v1::Decision::kDigests: digests.inc(); break;
    case v1::Decision::kAbort: aborts.inc(); break;
    case v1::Decision::kStopFromOrigin: stop_from_origin.inc(); break;
    case v1::Decision::DECISION_NOT_SET: break;
  }
}

void scheduler_metrics::count(v1::PieceFailed::Reason r) {
  std::string name = v1::PieceFailed::Reason_Name(r);
  if (name.empty()) name = "UNKNOWN";
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  piece_failures.with({name}).inc();
}

}  // namespace shoal::scheduler
