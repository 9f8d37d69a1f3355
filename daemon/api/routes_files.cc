// POST /v1/files (routes_files.h).

// GCC 12 reports -Wmismatched-new-delete on every Asio awaitable frame: a known
// false positive (the frame's class-specific operator new/delete do match).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "daemon/api/routes_files.h"

#include <boost/json.hpp>

#include "daemon/transfer/file_fetch.h"

namespace shoal::api {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;

namespace {

constexpr std::size_t kMaxBody = 64 * 1024;

std::string string_field(const json::object& o, const char* key) {
  if (auto* v = o.if_contains(key); v && v->is_string()) return std::string(v->get_string());
  return {};
}

awaitable<bool> post_file(route_context ctx, transfer::task_manager* tasks,
                          source::registry_client* origin) {
  const auto& body = ctx.req->body();
  if (body.size() > kMaxBody)
    co_return co_await reply_error(ctx, status::payload_too_large, "too_large",
                                   "request body over 64 KiB");
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object())
    co_return co_await reply_error(ctx, status::bad_request, "invalid_argument",
                                   "body must be a JSON object {\"url\":..., \"output\":...}");
  const auto& o = v.get_object();
  transfer::file_request req;
  req.url = string_field(o, "url");
  req.output = string_field(o, "output");
  req.digest = string_field(o, "digest");
  req.tag = string_field(o, "tag");
  req.authorization = string_field(o, "authorization");
  if (req.url.empty() || req.output.empty())
    co_return co_await reply_error(ctx, status::bad_request, "invalid_argument",
                                   "\"url\" and \"output\" are required");
  auto r = co_await transfer::fetch_file(*tasks, *origin, req);
  if (!r) co_return co_await reply_error(ctx, r.error());
  json::object out;
  out["task_id"] = r->task_id;
  out["size"] = r->size;
  out["cache_hit"] = r->cache_hit;
  out["linked"] = r->linked;
  out["output"] = req.output.string();
  json::value reply = std::move(out);
  co_return co_await reply_json(ctx, status::ok, std::move(reply));
}

}  // namespace

void add_file_routes(router& r, transfer::task_manager& tasks, source::registry_client& origin) {
  r.add(bhttp::verb::post, "/v1/files", [t = &tasks, o = &origin](route_context ctx) {
    return post_file(std::move(ctx), t, o);
  });
}

}  // namespace shoal::api
