#pragma once
// Plain HTTP(S) files through the piece cache and the swarm (`shoalctl get`,
// DESIGN §2): the task id is SHA-256 of the URL without volatile query
// parameters (daemon/source/url_task.h), so the same file behind differently
// signed URLs is fetched once per cluster. The size comes from a HEAD; the
// origin must answer Range requests (pieces are fetched with Range). The
// content is verified as a whole only when a digest is given.
//
// Threading: on the daemon's I/O executor, like the task manager.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/result.h"
#include "daemon/source/registry_client.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::transfer {

struct file_request {
  std::string url;
  std::filesystem::path output;  // absolute path of the file to create (replaced atomically)
  std::string digest;            // optional "sha256:<hex>" the content must hash to
  std::string tag;               // optional: keeps versions of a mutable URL apart
  std::string authorization;     // optional header value sent to the origin
};

struct file_result {
  std::string task_id;
  std::uint64_t size = 0;
  bool cache_hit = false;
  bool linked = false;  // hard-linked from the cache (else copied)
};

boost::asio::awaitable<result<file_result>> fetch_file(task_manager& tm,
                                                       source::registry_client& origin,
                                                       file_request req);

}  // namespace shoal::transfer
