#pragma once
// The local API's route areas; each lives in its own routes_<area>.cc and is
// wired in daemon/shoald/main.cc. A new area adds one file and one call.

#include "daemon/api/pulls.h"
#include "daemon/api/router.h"
#include "daemon/storage/store.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::api {

// POST /v1/pulls, GET /v1/pulls, GET|DELETE /v1/pulls/{id}, GET /v1/pulls/{id}/events
void add_pull_routes(router& r, pull_manager& pulls);
// GET /v1/tasks, DELETE /v1/tasks/{digest}
void add_task_routes(router& r, transfer::task_manager& tasks, storage::store& store);

}  // namespace shoal::api
