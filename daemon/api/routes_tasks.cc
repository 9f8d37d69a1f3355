// /v1/tasks: the piece cache's tasks (blobs), for CSI drivers and operators.
#include <boost/json.hpp>

#include "common/digest.h"
#include "daemon/api/routes.h"

namespace shoal::api {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;

namespace {

awaitable<bool> list_tasks(route_context ctx, transfer::task_manager* tasks,
                           storage::store* store) {
  json::array a;
  for (const auto& m : store->list()) {
    json::object o;
    o["digest"] = "sha256:" + m.id;
    o["size"] = m.content_length;
    o["piece_length"] = m.piece_length;
    o["piece_count"] = m.piece_count;
    // find() opens complete tasks (bumping their LRU time): only ask for partial ones
    auto t = m.complete ? nullptr : tasks->find(m.id);
    std::string state = m.complete ? "complete" : "partial";
    if (t && t->current() == transfer::task::state::downloading) state = "downloading";
    o["state"] = state;
    if (t && state == "downloading") {
      std::uint32_t readable = 0;
      for (std::uint32_t n = 0; n < t->piece_count(); ++n) readable += t->readable(n) ? 1 : 0;
      o["pieces_readable"] = readable;
    }
    o["last_access_ms"] = m.last_access_ms;
    a.push_back(std::move(o));
  }
  json::object o;
  o["tasks"] = std::move(a);
  json::value v = std::move(o);
  co_return co_await reply_json(ctx, status::ok, std::move(v));
}

awaitable<bool> delete_task(route_context ctx, transfer::task_manager* tasks,
                            storage::store* store) {
  auto d = parse_digest(ctx.param("digest"));
  if (!d) co_return co_await reply_error(ctx, status::bad_request, "invalid_argument", d.error().message);
  if (!store->find(d->hex))
    co_return co_await reply_error(ctx, status::not_found, "not_found",
                                   "no task for " + d->str() + " in the cache");
  if (auto t = tasks->find(d->hex); t && t->current() == transfer::task::state::downloading)
    co_return co_await reply_error(ctx, status::conflict, "busy",
                                   d->str() + " is downloading; delete it when it is done");
  auto r = store->remove(d->hex);
  if (!r) {
    if (r.error().is(errc::busy))
      co_return co_await reply_error(ctx, status::conflict, "busy",
                                     d->str() + " is being read or uploaded; retry later");
    co_return co_await reply_error(ctx, r.error());
  }
  json::object o;
  o["deleted"] = d->str();
  json::value v = std::move(o);
  co_return co_await reply_json(ctx, status::ok, std::move(v));
}

}  // namespace

void add_task_routes(router& r, transfer::task_manager& tasks, storage::store& store) {
  auto* t = &tasks;
  auto* s = &store;
  using bhttp::verb;
  r.add(verb::get, "/v1/tasks", [t, s](route_context ctx) { return list_tasks(std::move(ctx), t, s); });
  r.add(verb::delete_, "/v1/tasks/{digest}",
        [t, s](route_context ctx) { return delete_task(std::move(ctx), t, s); });
}

}  // namespace shoal::api
