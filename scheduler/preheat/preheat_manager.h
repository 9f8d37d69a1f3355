#pragma once
// Preheat jobs (DESIGN §9, scheduler/README.md "Preheat"): "have every seed
// host fetch every blob of this model now". The manager holds the jobs and
// their per-seed progress; it does no I/O. Seeds learn of their jobs from
// assignments() appended to their AnnounceHost responses, and report
// progress with report() (the ReportPreheat RPC).
//
// Threading: not thread-safe. Owned by the scheduler's owner thread (the
// service's io_context), like the engine it reads hosts from. The dashboard
// and the gRPC handlers call it there.

#include <cstdint>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/result.h"
#include "scheduler/resource/clock.h"
#include "scheduler/scheduling/engine.h"
#include "shoal/v1/scheduler.pb.h"

namespace shoal::scheduler {

struct preheat_options {
  // A seed that has not reported a job this long after it was assigned (or
  // since its last report, while running) fails it: the seed is gone or does
  // not understand preheat. Long enough for a few heartbeats.
  duration seed_timeout = std::chrono::seconds(60);
  // Finished jobs kept for get()/list(); the oldest finished are dropped first.
  std::size_t max_jobs = 256;
};

class preheat_manager {
 public:
  // `eng` supplies the hosts (seed flag, last heartbeat); it must outlive this.
  preheat_manager(preheat_options opts, const engine& eng, const clock& clk, std::uint64_t seed);

  // Starts a job for `reference` on every online seed host (announced with
  // seed=true within the host TTL). Errors: invalid_argument (malformed
  // reference), unavailable (no seed host online: start shoald with --seed).
  result<v1::PreheatJob> start(const v1::PreheatRequest& req);
  // A job by id; not_found when unknown (never started, dropped, or the
  // scheduler restarted: jobs are soft state like everything else here).
  result<v1::PreheatJob> get(const std::string& id) const;
  // Every job kept, newest first.
  v1::ListPreheatsResponse list() const;

  // Appends the jobs host h still has to run (pending or running on h).
  void assignments(const std::string& host, v1::AnnounceHostResponse& resp) const;
  // A seed's progress. Returns false when the job is unknown for that host.
  bool report(const v1::PreheatReport& r);
  // Fails seeds that went silent (seed_timeout) or whose host expired. Call
  // every second or so.
  void tick();

  std::size_t size() const { return jobs_.size(); }

 private:
  struct seed_state {
    v1::PreheatSeed info;
    time_point last_heard{};
  };
  struct job {
    v1::PreheatJob info;  // seeds and totals are filled on the way out
    std::string authorization;
    std::map<std::string, seed_state> seeds;
  };
  v1::PreheatJob render(const job& j) const;
  void settle(job& j);  // recomputes the job's state from its seeds
  void trim();

  preheat_options opts_;
  const engine& engine_;
  const clock& clock_;
  std::mt19937_64 rng_;
  std::map<std::string, job> jobs_;
  std::deque<std::string> order_;  // job ids, oldest first
};

}  // namespace shoal::scheduler
