#pragma once
// Manifest-driven prefetch (DESIGN §8): when a ModelPack manifest passes
// through the mirror, every layer is started at once (at most `parallel`
// downloads in flight per daemon), so the client's later blob requests —
// containerd fetches layers a few at a time, CSI drivers one by one — find
// them downloading or done. Layers already complete in the cache, queued or
// running are skipped; the queue is bounded (older manifests' layers first).
//
// Threading: the daemon's I/O executor.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <deque>
#include <set>
#include <string>

#include "common/metrics.h"
#include "daemon/model/manifest.h"
#include "daemon/source/registry_client.h"
#include "daemon/storage/store.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::mirror {

class prefetcher {
 public:
  prefetcher(boost::asio::any_io_executor ex, transfer::task_manager& tasks, storage::store& store,
             metrics::registry& reg, std::size_t parallel = 8, std::size_t max_queue = 4096);
  // Queues the manifest's layers (and its config) for download.
  void add(const model::manifest& m, const source::request_target& target);
  std::size_t queued() const { return queue_.size(); }
  std::size_t running() const { return running_; }
  void stop() { stopped_ = true; }

 private:
  struct item {
    digest blob;
    std::uint64_t size;
    source::request_target target;
  };
  void pump();
  boost::asio::awaitable<void> worker();
  void push(const digest& d, std::uint64_t size, const source::request_target& target);

  boost::asio::any_io_executor ex_;
  transfer::task_manager& tasks_;
  storage::store& store_;
  std::size_t parallel_;
  std::size_t max_queue_;
  metrics::family<metrics::counter>& layers_;
  std::deque<item> queue_;
  std::set<std::string> pending_;  // hex of queued or running layers
  std::size_t running_ = 0;
  bool stopped_ = false;
};

}  // namespace shoal::mirror
