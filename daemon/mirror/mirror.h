#pragma once
// The mirror (DESIGN §8): the OCI distribution pull API that containerd, CSI
// drivers and skopeo talk to. Manifests are proxied (tags resolve upstream,
// manifests by digest are cached and verified); blobs go through the task
// manager and are streamed to the client in order as pieces become readable.
//
// Threading: runs on the daemon's I/O executor, like the task manager.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "common/http.h"
#include "common/metrics.h"
#include "daemon/source/registry_client.h"
#include "daemon/storage/store.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::mirror {

struct options {
  std::string default_registry;             // upstream when the client sends no ns=
  std::size_t manifest_limit = 4 << 20;     // bytes
  std::chrono::seconds auth_cache_ttl{30};  // how long an upstream HEAD proves access
  std::size_t write_chunk = 1 << 20;        // bytes per write to the client
};

class mirror {
 public:
  mirror(source::registry_client& origin, transfer::task_manager& tasks, storage::store& store,
         metrics::registry& reg, options opts);
  // The HTTP handler for the mirror's listener.
  boost::asio::awaitable<bool> handle(http::request req, http::beast::tcp_stream& stream);

 private:
  struct route;
  struct upstream_check {
    std::uint64_t content_length = 0;
    std::string content_type;
    std::string docker_content_digest;
  };
  boost::asio::awaitable<bool> handle_base(const http::request& req, route r,
                                           http::beast::tcp_stream& stream);
  boost::asio::awaitable<bool> handle_manifest(const http::request& req, route r,
                                               http::beast::tcp_stream& stream);
  boost::asio::awaitable<bool> handle_blob(const http::request& req, route r,
                                           http::beast::tcp_stream& stream);
  // Sends an upstream non-2xx response (401 challenge, 404, ...) to the client.
  boost::asio::awaitable<bool> relay_status(const http::request& req, const source::response& res,
                                            http::beast::tcp_stream& stream);
  // Counts the request and sends an OCI error body.
  boost::asio::awaitable<bool> reply_error(const http::request& req,
                                           http::beast::tcp_stream& stream, std::string_view kind,
                                           http::status st, std::string_view code,
                                           std::string message);
  boost::asio::awaitable<bool> reply_manifest(const http::request& req,
                                              http::beast::tcp_stream& stream,
                                              std::string media_type, std::string body,
                                              std::string digest);
  std::string auth_key(const http::request& req, const route& r, const std::string& what) const;

  source::registry_client& origin_;
  transfer::task_manager& tasks_;
  storage::store& store_;
  options opts_;
  metrics::family<metrics::counter>& requests_;
  metrics::counter& client_bytes_;
  metrics::counter& cache_hits_;
  metrics::counter& cache_misses_;
  metrics::counter& cache_bytes_;  // shoal_bytes_total{source="cache"}
  metrics::counter& storage_failures_;  // shoal_failures_total{kind="storage"}
  // Upstream HEADs that proved a credential may read a blob or manifest.
  std::map<std::string, std::pair<std::chrono::steady_clock::time_point, upstream_check>> auth_ok_;
};

}  // namespace shoal::mirror
