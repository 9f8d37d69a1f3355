#pragma once
// A seed host's side of preheat (scheduler/README.md "Preheat"): jobs arrive
// with AnnounceHost answers; for each, resolve the reference's manifest with
// the registry client, acquire the config and every layer through the task
// manager (so the swarm elects this seed as source and other nodes later
// fetch from it), and report progress with ReportPreheat to the scheduler
// that sent the job.
//
// Threading: everything on the daemon's I/O executor; gRPC completions are
// posted to it.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/source/registry_client.h"
#include "daemon/transfer/scheduler_client.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::transfer {

struct preheat_options {
  std::string host_id;
  std::size_t parallel_blobs = 4;      // blobs of one job downloading at once
  std::chrono::milliseconds report_every{500};
  std::size_t max_manifest = 4 << 20;  // bytes, as the mirror
};

// A manifest's blobs, for preheat and tests.
struct manifest_blob {
  std::string digest;  // "sha256:..."
  std::uint64_t size = 0;
};
// The config and layers of an OCI/Docker image manifest (ModelPack or not).
// Indexes and malformed manifests are errors that say so.
result<std::vector<manifest_blob>> manifest_blobs(std::string_view body, std::string_view what);

class preheater {
 public:
  preheater(boost::asio::any_io_executor ex, task_manager& tm, source::registry_client& origin,
            scheduler_client& sched, preheat_options opts);
  // A job from scheduler `sched_index` (idempotent: a job already known is
  // not started again; a finished one has its final report sent again).
  void on_assignment(std::size_t sched_index, const v1::PreheatAssignment& a);
  // Shutdown: no new jobs; running ones end as their tasks are cancelled.
  void stop() { stopped_ = true; }

 private:
  struct job;
  boost::asio::awaitable<void> run(std::shared_ptr<job> j);
  boost::asio::awaitable<result<void>> fetch(std::shared_ptr<job> j, manifest_blob b,
                                             source::request_target origin);
  boost::asio::awaitable<void> report(std::shared_ptr<job> j, bool final);
  void forget_old();

  boost::asio::any_io_executor ex_;
  task_manager& tm_;
  source::registry_client& origin_;
  scheduler_client& sched_;
  preheat_options opts_;
  std::map<std::string, std::shared_ptr<job>> jobs_;
  std::deque<std::string> order_;
  bool stopped_ = false;
};

}  // namespace shoal::transfer
