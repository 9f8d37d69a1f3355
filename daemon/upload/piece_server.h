#pragma once
// The peer-facing piece server (DESIGN §4): other daemons fetch pieces of
// tasks this daemon holds, also while it is still downloading them.
//   GET /v1/tasks/{id}/pieces/{n}         the piece's bytes (readable pieces, and
//                                         pieces being received: relayed as they arrive)
//   GET /v1/tasks/{id}/bitmap?after={v}   readable-piece bitmap, long-polled
// Uploads are bounded: a fixed number of slots (503 at once when all are
// busy) and a token-bucket rate limit over all uploads.
//
// Threading: runs on the daemon's I/O executor, like the task manager.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>

#include "common/http.h"
#include "common/metrics.h"
#include "common/rate_limiter.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::upload {

struct options {
  std::uint64_t rate_limit = 0;              // bytes/s over all uploads, 0 = unlimited
  std::uint32_t slots = 8;                   // concurrent piece uploads
  std::chrono::seconds bitmap_wait{20};      // longest /bitmap long-poll
  std::size_t chunk = 256 * 1024;            // bytes per rate-limited sendfile
};

class piece_server {
 public:
  piece_server(transfer::task_manager& tasks, metrics::registry& reg, options opts);
  // The HTTP handler for the peer listener.
  boost::asio::awaitable<bool> handle(http::request req, http::beast::tcp_stream& stream);

  std::uint32_t slots() const { return opts_.slots; }
  std::uint32_t slots_in_use() const { return in_use_; }
  std::uint64_t rate_limit() const { return opts_.rate_limit; }
  // Upload rate over the last few seconds (bytes/s), for AnnounceHost.
  std::uint64_t recent_rate();

 private:
  boost::asio::awaitable<bool> piece(const http::request& req, std::string id, std::uint32_t n,
                                     http::beast::tcp_stream& stream);
  // Sends piece n from `p` as its bytes arrive.
  boost::asio::awaitable<bool> relay(transfer::task& t, std::uint32_t n, transfer::partial_piece& p,
                                     http::beast::tcp_stream& stream);
  boost::asio::awaitable<bool> bitmap(const http::request& req, std::string id,
                                      std::uint64_t after, bool has_after,
                                      http::beast::tcp_stream& stream);

  transfer::task_manager& tasks_;
  options opts_;
  rate_limiter limit_;
  std::uint32_t in_use_ = 0;
  metrics::counter& bytes_;
  metrics::gauge& slots_gauge_;
  metrics::family<metrics::counter>& requests_;
  metrics::counter& relays_;
  double rate_mark_bytes_ = 0;
  std::chrono::steady_clock::time_point rate_mark_ = std::chrono::steady_clock::now();
  std::uint64_t last_rate_ = 0;
};

}  // namespace shoal::upload
