#include "scheduler/dashboard/dashboard.h"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include "common/digest.h"
#include "scheduler/dashboard/assets.h"

namespace shoal::scheduler::dashboard {

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace asio = boost::asio;
using http::status;

namespace {

constexpr std::string_view cookie_name = "shoal_dashboard_token";

// The page loads only its own bundled script and style, talks only to this
// origin, and cannot be framed.
constexpr std::string_view csp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

bhttp::fields security_headers() {
  bhttp::fields f;
  f.set("Content-Security-Policy", csp);
  f.set("X-Content-Type-Options", "nosniff");
  f.set("X-Frame-Options", "DENY");
  f.set("Referrer-Policy", "no-referrer");
  return f;
}

std::string error_json(std::string_view message) {
  return boost::json::serialize(boost::json::object{{"error", message}});
}

asio::awaitable<bool> send_json(beast::tcp_stream& s, const http::request& req, status st,
                                std::string body, bhttp::fields extra = security_headers()) {
  extra.set(bhttp::field::cache_control, "no-store");
  co_return co_await http::send(s, req, st, std::move(body), "application/json", extra);
}

// The value of cookie `name` in the request's Cookie headers, or empty.
std::string_view cookie(const http::request& req, std::string_view name) {
  for (auto it = req.find(bhttp::field::cookie); it != req.end() && it->name() == bhttp::field::cookie;
       ++it) {
    std::string_view v = it->value();
    while (!v.empty()) {
      auto semi = v.find(';');
      std::string_view pair = v.substr(0, semi);
      v = semi == std::string_view::npos ? std::string_view{} : v.substr(semi + 1);
      while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
      auto eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == name) return pair.substr(eq + 1);
    }
  }
  return {};
}

// The decoded value of query parameter `name`, if present.
std::optional<std::string> query_param(std::string_view target, std::string_view name) {
  auto u = boost::urls::parse_origin_form(target);
  if (!u) return std::nullopt;
  for (auto p : u->params())
    if (p.key == name) return std::string(p.value);
  return std::nullopt;
}

bool get_or_head(const http::request& req) {
  return req.method() == bhttp::verb::get || req.method() == bhttp::verb::head;
}

}  // namespace

bool token_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < b.size(); ++i)
    diff |= static_cast<unsigned char>(a.empty() ? 0 : a[i % a.size()]) ^
            static_cast<unsigned char>(b[i]);
  return diff == 0 && !b.empty();
}

server::server(const engine& state, const clock& clk, options opts)
    : ctx_{state, clk, opts.version, clk.now()}, opts_(std::move(opts)) {
  ctx_.preheat = opts_.preheat != nullptr;
}

bool server::owns(std::string_view path) { return path != "/healthz" && path != "/metrics"; }

bool server::authorized(const http::request& req) const {
  if (opts_.token.empty()) return true;
  auto auth = req[bhttp::field::authorization];
  constexpr std::string_view bearer = "Bearer ";
  if (auth.size() > bearer.size() && auth.substr(0, bearer.size()) == bearer)
    return token_equal(auth.substr(bearer.size()), opts_.token);
  std::string_view c = cookie(req, cookie_name);
  return !c.empty() && token_equal(c, opts_.token);
}

asio::awaitable<bool> server::handle(http::request req, beast::tcp_stream& stream) {
  std::string_view target = req.target();
  std::string_view path = target, query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  if (path.starts_with("/api/")) co_return co_await api(std::move(req), stream, path);
  co_return co_await page(std::move(req), stream, path, query);
}

asio::awaitable<bool> server::page(http::request req, beast::tcp_stream& stream,
                                   std::string_view path, std::string_view query) {
  if (!get_or_head(req))
    co_return co_await http::send(stream, req, status::method_not_allowed,
                                  "the dashboard's pages take GET only\n", "text/plain",
                                  security_headers());
  if (path == "/" && !opts_.token.empty() && query.find("token=") != std::string_view::npos) {
    // Trade the token in the address for an HttpOnly cookie, and drop it from
    // the address bar (and from the browser history) at once.
    auto given = query_param(req.target(), "token");
    if (given && token_equal(*given, opts_.token)) {
      auto h = security_headers();
      h.set(bhttp::field::set_cookie, std::string(cookie_name) + "=" + opts_.token +
                                          "; Path=/; HttpOnly; SameSite=Strict");
      h.set(bhttp::field::location, "/");
      h.set(bhttp::field::cache_control, "no-store");
      co_return co_await http::send(stream, req, status::see_other, "", "text/plain", h);
    }
  }
  if (!authorized(req)) {
    auto h = security_headers();
    h.set(bhttp::field::cache_control, "no-store");
    co_return co_await http::send(
        stream, req, status::unauthorized,
        "<!doctype html><title>Shoal: token required</title><h1>Token required</h1>"
        "<p>This scheduler's dashboard needs its token. Open <code>/?token=TOKEN</code> with "
        "the value of shoal-scheduler's <code>--dashboard-token</code>.</p>\n",
        "text/html; charset=utf-8", h);
  }
  const asset* a = find_asset(path == "/" ? "/index.html" : path);
  if (a == nullptr)
    co_return co_await http::send(stream, req, status::not_found,
                                  "not found: the dashboard is at /, its API under /api/v1/\n",
                                  "text/plain", security_headers());
  auto h = security_headers();
  h.set(bhttp::field::etag, a->etag);
  // Revalidate every time (cheap: 304 by ETag); a new scheduler build shows at once.
  h.set(bhttp::field::cache_control, "no-cache");
  if (req[bhttp::field::if_none_match] == a->etag)
    co_return co_await http::send(stream, req, status::not_modified, "", "", h);
  co_return co_await http::send(stream, req, status::ok, std::string(a->body), a->content_type,
                                h);
}

asio::awaitable<bool> server::api(http::request req, beast::tcp_stream& stream,
                                  std::string_view path) {
  if (!authorized(req)) {
    auto h = security_headers();
    h.set(bhttp::field::www_authenticate, "Bearer realm=\"shoal-scheduler\"");
    co_return co_await send_json(
        stream, req, status::unauthorized,
        error_json("this API needs the scheduler's token: send 'Authorization: Bearer TOKEN' "
                   "with the value of --dashboard-token"),
        h);
  }
  constexpr std::string_view v1 = "/api/v1/";
  if (!path.starts_with(v1))
    co_return co_await send_json(stream, req, status::not_found,
                                 error_json("unknown API version: use /api/v1/"));
  std::string_view rest = path.substr(v1.size());

  if (rest == "preheat" && opts_.preheat != nullptr && get_or_head(req))
    co_return co_await send_json(stream, req, status::ok, preheats_json(opts_.preheat->list()));
  if (rest == "preheat") {
    if (req.method() != bhttp::verb::post)
      co_return co_await send_json(
          stream, req, status::method_not_allowed,
          error_json("POST a preheat: {\"reference\": \"REGISTRY/REPO:TAG\"}, or GET the list"));
    if (opts_.preheat == nullptr)
      co_return co_await send_json(stream, req, status::not_implemented,
                                   error_json("this scheduler has no preheat backend"));
    // A form on another site cannot send JSON without a CORS preflight, which we never grant.
    if (!req[bhttp::field::content_type].starts_with("application/json"))
      co_return co_await send_json(stream, req, status::unsupported_media_type,
                                   error_json("send the preheat as Content-Type: application/json"));
    v1::PreheatRequest pr;
    boost::system::error_code jec;
    auto body = boost::json::parse(req.body(), jec);
    const boost::json::object* o = !jec && body.is_object() ? &body.as_object() : nullptr;
    const boost::json::value* ref = o ? o->if_contains("reference") : nullptr;
    const boost::json::value* auth = o ? o->if_contains("authorization") : nullptr;
    if (ref == nullptr || !ref->is_string() || (auth != nullptr && !auth->is_string()))
      co_return co_await send_json(
          stream, req, status::bad_request,
          error_json("the body must be a JSON object {\"reference\": \"REGISTRY/REPO:TAG\"} "
                     "(and optionally \"authorization\": \"Basic ...\" for the registry)"));
    pr.set_reference(std::string(ref->as_string()));
    if (auth != nullptr) pr.set_authorization(std::string(auth->as_string()));
    auto r = opts_.preheat->start(pr);
    if (!r)
      co_return co_await send_json(
          stream, req,
          r.error().is(errc::invalid_argument) ? status::bad_request : status::service_unavailable,
          error_json(r.error().message));
    co_return co_await send_json(stream, req, status::created, preheat_json(*r));
  }
  if (!get_or_head(req))
    co_return co_await send_json(stream, req, status::method_not_allowed,
                                 error_json("this endpoint takes GET only"));
  if (rest == "overview")
    co_return co_await send_json(stream, req, status::ok, overview_json(ctx_));
  if (rest == "hosts") co_return co_await send_json(stream, req, status::ok, hosts_json(ctx_));
  if (rest == "tasks") co_return co_await send_json(stream, req, status::ok, tasks_json(ctx_));
  if (rest.starts_with("tasks/")) {
    std::string_view id = rest.substr(6);
    if (id.starts_with("sha256:")) id.remove_prefix(7);
    if (!is_sha256_hex(id))
      co_return co_await send_json(
          stream, req, status::bad_request,
          error_json("a task id is 64 lowercase hex (a blob digest's hex, or sha256:HEX)"));
    auto body = task_json(ctx_, task_id(std::string(id)));
    if (!body)
      co_return co_await send_json(
          stream, req, status::not_found,
          error_json("task " + std::string(id) + " is not known to this scheduler"));
    co_return co_await send_json(stream, req, status::ok, std::move(*body));
  }
  if (rest.starts_with("preheat/")) {
    if (opts_.preheat == nullptr)
      co_return co_await send_json(stream, req, status::not_implemented,
                                   error_json("this scheduler has no preheat backend"));
    std::string_view id = rest.substr(8);
    if (id.empty() || id.size() > 64 ||
        id.find_first_not_of("0123456789abcdef") != std::string_view::npos)
      co_return co_await send_json(stream, req, status::bad_request,
                                   error_json("a preheat id is the hex id POST returned"));
    auto r = opts_.preheat->get(std::string(id));
    if (!r)
      co_return co_await send_json(stream, req, status::not_found, error_json(r.error().message));
    co_return co_await send_json(stream, req, status::ok, preheat_json(*r));
  }
  co_return co_await send_json(
      stream, req, status::not_found,
      error_json("no such endpoint: try /api/v1/overview, /hosts, /tasks, /tasks/{id}"));
}

}  // namespace shoal::scheduler::dashboard
