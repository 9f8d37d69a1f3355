#pragma once
// Model pulls ("put model REF at DIR"): each pull is a job that
//   1. resolves REF to a manifest through the origin client (tags upstream,
//      digests verified; --insecure-registry respected),
//   2. selects layers (--include/--exclude on their file paths) and stops
//      early when DIR's marker says the same manifest is already there,
//   3. checks DIR and the free space on its filesystem,
//   4. acquires every selected layer through the task manager, at most
//      `parallel_layers` at once (so the swarm serves them with --scheduler),
//   5. lays the files out on a blocking-work thread (daemon/model/layout.h).
// Jobs outlive the client that started them: a CSI driver or shoalctl that
// goes away does not stop the pull; asking again for the same DIR attaches
// to the running job (or finds the marker: a no-op). DELETE cancels: the
// staging directory is removed; pieces already in the cache stay, so a
// rerun resumes.
//
// Threading: jobs live on the daemon's I/O executor; only the layout runs on
// the manager's blocking pool (it touches no job state but the atomic
// cancel flag).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/json/object.hpp>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "common/result.h"
#include "daemon/model/filter.h"
#include "daemon/model/manifest.h"
#include "daemon/source/registry_client.h"
#include "daemon/storage/store.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::api {

struct pull_options {
  std::size_t max_active = 8;        // pulls running at once; more get 429
  std::size_t parallel_layers = 8;   // layers downloading at once per pull
  std::size_t keep_finished = 64;    // finished pulls kept for GET /v1/pulls
  std::size_t manifest_limit = 4 << 20;
};

struct pull_request {
  std::string reference;
  std::string output_dir;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  std::string authorization;  // passed upstream as Authorization ("" = anonymous)
};

// Parses and checks a POST /v1/pulls body.
result<pull_request> parse_pull_request(std::string_view body);

enum class pull_state { resolving, downloading, laying_out, done, failed, cancelled };
const char* state_name(pull_state s);
inline bool terminal(pull_state s) {
  return s == pull_state::done || s == pull_state::failed || s == pull_state::cancelled;
}

struct layer_progress {
  model::layer desc;
  std::uint64_t bytes_done = 0;
  bool complete = false;
  bool cached = false;  // was complete in the cache before the pull
};

class pull_job {
 public:
  pull_job(boost::asio::any_io_executor ex, std::string id, pull_request req);
  const std::string& id() const { return id_; }
  const pull_request& request() const { return req_; }
  pull_state state() const { return state_; }
  std::uint64_t version() const { return version_; }
  std::uint64_t bytes_total() const;
  std::uint64_t bytes_done() const;
  const std::vector<layer_progress>& layers() const { return layers_; }
  const std::string& manifest_digest() const { return manifest_digest_; }
  // The whole job as JSON (GET /v1/pulls/{id}, the "end" event).
  boost::json::object to_json() const;
  // Waits until the job changes or the deadline passes.
  boost::asio::awaitable<void> wait_change(std::chrono::steady_clock::time_point deadline);

 private:
  friend class pull_manager;
  void changed();
  void set_state(pull_state s);

  std::string id_;
  pull_request req_;
  pull_state state_ = pull_state::resolving;
  std::string manifest_digest_;
  std::string media_type_;
  bool noop_ = false;
  std::vector<layer_progress> layers_;
  std::optional<error> error_;
  std::uint64_t files_ = 0, linked_ = 0, copied_ = 0, extracted_ = 0;
  std::chrono::system_clock::time_point started_, finished_;
  std::atomic<bool> cancelled_{false};
  std::uint64_t version_ = 0;
  std::vector<boost::asio::steady_timer*> watchers_;
  boost::asio::any_io_executor ex_;
};

class pull_manager {
 public:
  pull_manager(boost::asio::any_io_executor ex, source::registry_client& origin,
               transfer::task_manager& tasks, storage::store& store,
               std::filesystem::path cache_dir, metrics::registry& reg, pull_options opts = {});
  ~pull_manager();
  // Starts a pull, or returns the running one for the same output directory
  // (`attached` = true). errc::busy when that job pulls something else;
  // errc::too_large (429) when max_active pulls are running.
  result<std::shared_ptr<pull_job>> start(pull_request req, bool* attached);
  std::shared_ptr<pull_job> find(const std::string& id) const;
  // Running first, then finished, newest first.
  std::vector<std::shared_ptr<pull_job>> list() const;
  // Asks a running job to stop; errc::not_found for unknown ids.
  result<void> cancel(const std::string& id);
  std::size_t active() const;
  // Shutdown: cancels every job.
  void stop();

 private:
  boost::asio::awaitable<void> run(std::shared_ptr<pull_job> job);
  boost::asio::awaitable<result<void>> resolve(std::shared_ptr<pull_job> job,
                                               source::request_target target);
  boost::asio::awaitable<result<void>> download(std::shared_ptr<pull_job> job,
                                                source::request_target target);
  boost::asio::awaitable<void> download_worker(std::shared_ptr<pull_job> job,
                                               source::request_target target,
                                               std::shared_ptr<std::size_t> next,
                                               std::shared_ptr<std::optional<error>> failure,
                                               std::shared_ptr<std::size_t> running);
  void finish(const std::shared_ptr<pull_job>& job, std::optional<error> err);

  boost::asio::any_io_executor ex_;
  source::registry_client& origin_;
  transfer::task_manager& tasks_;
  storage::store& store_;
  std::filesystem::path cache_dir_;
  pull_options opts_;
  metrics::family<metrics::counter>& pulls_total_;
  metrics::gauge& pulls_active_;
  boost::asio::thread_pool blocking_{1};
  std::vector<std::shared_ptr<pull_job>> active_;
  std::deque<std::shared_ptr<pull_job>> finished_;
  bool stopped_ = false;
};

}  // namespace shoal::api
