#include "daemon/api/router.h"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

namespace shoal::api {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {
std::vector<std::string> split_path(std::string_view p) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < p.size()) {
    if (p[i] == '/') {
      ++i;
      continue;
    }
    auto j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    out.emplace_back(p.substr(i, j - i));
    i = j;
  }
  return out;
}
}  // namespace

void router::add(bhttp::verb method, std::string pattern, route_handler h) {
  routes_.push_back({method, split_path(pattern), std::move(h)});
}

awaitable<bool> router::dispatch(request req, connection& conn) const {
  route_context ctx;
  ctx.req = &req;
  ctx.conn = &conn;
  auto url = boost::urls::parse_origin_form(req.target());
  if (!url) co_return co_await reply_error(ctx, status::bad_request, "bad_request", "malformed request target");
  std::vector<std::string> segs;
  for (auto s : url->segments()) segs.emplace_back(s);
  for (auto p : url->params()) ctx.query[std::string(p.key)] = std::string(p.value);
  std::string allow;
  for (const auto& r : routes_) {
    if (r.segments.size() != segs.size()) continue;
    std::map<std::string, std::string> params;
    bool match = true;
    for (std::size_t i = 0; i < segs.size() && match; ++i) {
      const auto& ps = r.segments[i];
      if (ps.size() > 2 && ps.front() == '{' && ps.back() == '}') {
        if (segs[i].empty()) match = false;
        else params[ps.substr(1, ps.size() - 2)] = segs[i];
      } else if (ps != segs[i]) {
        match = false;
      }
    }
    if (!match) continue;
    if (r.method != req.method()) {
      if (!allow.empty()) allow += ", ";
      allow += std::string(bhttp::to_string(r.method));
      continue;
    }
    ctx.params = std::move(params);
    co_return co_await r.handler(ctx);
  }
  if (!allow.empty())
    co_return co_await reply_error(ctx, status::method_not_allowed, "method_not_allowed",
                                   std::string(req.method_string()) + " is not allowed on " +
                                       std::string(url->path()) + " (allowed: " + allow + ")");
  co_return co_await reply_error(ctx, status::not_found, "not_found",
                                 "no such endpoint: " + std::string(url->path()) +
                                     " (see the README: /v1/pulls, /v1/tasks)");
}

std::pair<status, std::string> status_for(const error& e) {
  if (e.is(errc::invalid_argument)) return {status::bad_request, "invalid_argument"};
  if (e.is(errc::not_found)) return {status::not_found, "not_found"};
  if (e.is(errc::unauthorized)) return {status::unauthorized, "unauthorized"};
  if (e.is(errc::forbidden)) return {status::forbidden, "forbidden"};
  if (e.is(errc::too_large)) return {status::payload_too_large, "too_large"};
  if (e.is(errc::digest_mismatch)) return {status::bad_gateway, "digest_mismatch"};
  if (e.is(errc::upstream_error)) return {status::bad_gateway, "upstream_error"};
  if (e.is(errc::network)) return {status::bad_gateway, "network"};
  if (e.is(errc::no_space)) return {status::insufficient_storage, "no_space"};
  if (e.is(errc::busy)) return {status::conflict, "busy"};
  if (e.is(errc::cancelled)) return {status::conflict, "cancelled"};
  if (e.is(errc::unsupported)) return {status::unprocessable_entity, "unsupported"};
  return {status::internal_server_error, "internal"};
}

awaitable<bool> reply_json(const route_context& ctx, status st, json::value v) {
  std::string text = json::serialize(v) + "\n";
  co_return co_await ctx.conn->send(*ctx.req, st, std::move(text), "application/json");
}

awaitable<bool> reply_error(const route_context& ctx, status st, std::string code,
                            std::string message) {
  json::object e;
  e["code"] = code;
  e["message"] = message;
  json::value o = json::object{{"error", std::move(e)}};
  co_return co_await reply_json(ctx, st, std::move(o));
}

awaitable<bool> reply_error(const route_context& ctx, const error& e) {
  auto [st, code] = status_for(e);
  co_return co_await reply_error(ctx, st, code, e.message);
}

}  // namespace shoal::api
