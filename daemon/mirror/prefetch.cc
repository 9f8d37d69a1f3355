#include "daemon/mirror/prefetch.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "common/log.h"

namespace shoal::mirror {

namespace asio = boost::asio;

namespace {
auto log() { return logger("mirror"); }
}  // namespace

prefetcher::prefetcher(asio::any_io_executor ex, transfer::task_manager& tasks,
                       storage::store& store, metrics::registry& reg, std::size_t parallel,
                       std::size_t max_queue)
    : ex_(ex),
      tasks_(tasks),
      store_(store),
      parallel_(parallel ? parallel : 1),
      max_queue_(max_queue),
      layers_(reg.add_counter("shoal_prefetch_layers_total",
                              "Layers of ModelPack manifests seen by the mirror, by what the "
                              "prefetch did (started, cached, joined, skipped, failed)",
                              {"result"})) {}

void prefetcher::push(const digest& d, std::uint64_t size, const source::request_target& target) {
  if (size == 0) return;
  if (pending_.count(d.hex)) {
    layers_.with({"joined"}).inc();
    return;
  }
  if (auto m = store_.find(d.hex); m && m->complete) {
    layers_.with({"cached"}).inc();
    return;
  }
  if (queue_.size() >= max_queue_) {
    layers_.with({"skipped"}).inc();
    return;
  }
  pending_.insert(d.hex);
  queue_.push_back({d, size, target});
}

void prefetcher::add(const model::manifest& m, const source::request_target& target) {
  if (stopped_) return;
  for (const auto& l : m.layers) push(l.blob, l.size, target);
  push(m.config, m.config_size, target);
  log()->info("prefetch: {} layers of {}/{} queued ({} running)", queue_.size(), target.registry,
              target.repository, running_);
  pump();
}

void prefetcher::pump() {
  while (!stopped_ && running_ < parallel_ && !queue_.empty()) {
    ++running_;
    asio::co_spawn(ex_, worker(), asio::detached);
  }
}

asio::awaitable<void> prefetcher::worker() {
  while (!stopped_ && !queue_.empty()) {
    item it = std::move(queue_.front());
    queue_.pop_front();
    bool hit = false;
    auto t = tasks_.acquire(it.blob, it.size, it.target, &hit);
    if (!t) {
      layers_.with({"failed"}).inc();
      log()->warn("prefetch {}: {}", it.blob.str(), t.error().message);
    } else if (hit) {
      layers_.with({"cached"}).inc();
    } else {
      layers_.with({"started"}).inc();
      log()->debug("prefetch {}: started", it.blob.str());
      auto task = std::move(*t);
      while (!stopped_ && task->current() == transfer::task::state::downloading)
        co_await task->wait_change(std::chrono::steady_clock::now() + std::chrono::seconds(1));
      if (task->current() == transfer::task::state::failed) layers_.with({"failed"}).inc();
    }
    pending_.erase(it.blob.hex);
  }
  --running_;
}

}  // namespace shoal::mirror
