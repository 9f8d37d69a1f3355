#pragma once
// A process's hold on the gRPC library, for shoald and shoal-scheduler.
//
// gRPC shuts itself down when the last object that initialised it goes. At
// exit that can be a channel's callback completion queue, which gRPC frees on
// one of its own threads after main() dropped the channel; gRPC then cleans
// up on a detached thread while main() returns and runs static destructors,
// and the process may abort ("ref_counted.h:183 assertion failed: prior > 0"
// right after "shoald stopped", seen once in a test run). Take the hold before
// the first gRPC object, and call shutdown() after the last one is gone: it
// drops the hold and waits until gRPC has finished cleaning up.

#include <grpc/grpc.h>

#include <chrono>
#include <thread>

namespace shoal {

class grpc_library {
 public:
  grpc_library() { grpc_init(); }
  ~grpc_library() {
    if (held_) grpc_shutdown();
  }
  grpc_library(const grpc_library&) = delete;
  grpc_library& operator=(const grpc_library&) = delete;

  // Drops the hold and waits up to `limit` for gRPC to finish shutting down.
  // False when gRPC is still initialised then (something still holds a
  // channel, a call or a server).
  bool shutdown(std::chrono::milliseconds limit) {
    if (held_) {
      held_ = false;
      grpc_shutdown();
    }
    const auto deadline = std::chrono::steady_clock::now() + limit;
    // grpc_is_initialized() takes gRPC's init lock, which its clean-up holds
    // until done, so 0 means the clean-up has finished.
    while (grpc_is_initialized() != 0) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

 private:
  bool held_ = true;
};

}  // namespace shoal
