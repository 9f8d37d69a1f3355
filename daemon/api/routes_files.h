#pragma once
// POST /v1/files: a plain HTTP(S) file through the piece cache and the swarm
// (`shoalctl get`; daemon/transfer/file_fetch.h). Body:
//   {"url": "...", "output": "/abs/path", "digest": "sha256:..."?, "tag": "..."?,
//    "authorization": "..."?}
// The answer comes when the file is in place: 200
//   {"task_id": "<64 hex>", "size": N, "cache_hit": bool, "linked": bool, "output": "..."}
// or an error ({"error":{"code","message"}}).

#include "daemon/api/router.h"
#include "daemon/source/registry_client.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::api {

void add_file_routes(router& r, transfer::task_manager& tasks, source::registry_client& origin);

}  // namespace shoal::api
