#include "daemon/source/registry_client.h"

// GCC 12 reports -Wmismatched-new-delete on every Asio awaitable frame: a known
// false positive (the frame's class-specific operator new/delete do match).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <charconv>
#include <map>
#include <mutex>
#include <tuple>

#include "common/log.h"
#include "daemon/source/bearer.h"
#include "daemon/source/connection.h"
#include "daemon/source/upstream_policy.h"

namespace shoal::source {
namespace {

constexpr std::uint32_t kHeaderLimit = 64 * 1024;
constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
constexpr std::size_t kErrorBodyLimit = 64 * kKiB;      // error JSON we keep for messages
constexpr std::size_t kTokenBodyLimit = kMiB;           // JWTs are a few KiB
constexpr std::size_t kIdlePerHost = 4;                 // idle keep-alive connections per origin
constexpr auto kIdleMaxAge = std::chrono::seconds(30);  // below common server keep-alive limits
constexpr std::size_t kMaxChallenges = 4096;
constexpr auto kMaxBackoff = std::chrono::milliseconds(30'000);
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

enum class body_mode {
  none,    // HEAD: headers only
  small,   // read the body into response.body (bounded)
  stream,  // 2xx: leave the body on the connection for a blob_stream
};

// One logical request, as it goes through auth, redirects and retries.
struct request_spec {
  http::verb method = http::verb::get;
  std::string accept;
  std::string authorization;
  std::string range;
  body_mode mode = body_mode::small;
  std::size_t max_body = kErrorBodyLimit;  // for a 2xx body in small mode
  std::string what;                        // "manifest latest from host/repo", for messages
};

// The outcome of one request: a response, and for a 2xx in stream mode the
// connection positioned at the start of the body.
struct exchange {
  response resp;
  url_target url;
  std::string location;
  std::string content_range;
  std::unique_ptr<connection> conn;
  std::unique_ptr<http::response_parser<http::buffer_body>> parser;
};

std::string short_digest(std::string_view d) {
  const auto colon = d.find(':');
  const std::size_t keep = (colon == std::string_view::npos ? 0 : colon + 1) + 12;
  if (d.size() <= keep) return std::string(d);
  return std::string(d.substr(0, keep)) + "…";
}

std::string format_limit(std::size_t n) {
  if (n >= kMiB && n % kMiB == 0) return std::to_string(n / kMiB) + " MiB";
  if (n >= kKiB && n % kKiB == 0) return std::to_string(n / kKiB) + " KiB";
  return std::to_string(n) + " bytes";
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

struct content_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::optional<std::uint64_t> total;
};

// "bytes 100-199/1000" or "bytes 100-199/*".
std::optional<content_range> parse_content_range(std::string_view s) {
  constexpr std::string_view prefix = "bytes ";
  if (s.substr(0, prefix.size()) != prefix) return std::nullopt;
  s.remove_prefix(prefix.size());
  const auto dash = s.find('-');
  const auto slash = s.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return std::nullopt;
  }
  content_range cr;
  auto first = parse_u64(s.substr(0, dash));
  auto last = parse_u64(s.substr(dash + 1, slash - dash - 1));
  if (!first || !last || *last < *first) return std::nullopt;
  cr.first = *first;
  cr.last = *last;
  const auto total = s.substr(slash + 1);
  if (total != "*") {
    cr.total = parse_u64(total);
    if (!cr.total || *cr.total <= cr.last) return std::nullopt;
  }
  return cr;
}

bool valid_repository(std::string_view r) {
  if (r.empty() || r.size() > 255 || r.front() == '/' || r.back() == '/') return false;
  if (r.find("//") != std::string_view::npos) return false;
  std::size_t start = 0;
  while (start <= r.size()) {
    const auto slash = std::min(r.find('/', start), r.size());
    const auto part = r.substr(start, slash - start);
    if (part == "." || part == "..") return false;
    start = slash + 1;
  }
  return std::all_of(r.begin(), r.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
           c == '/';
  });
}

// Tags and digests: letters, digits and `_ . - : + =`.
bool valid_reference(std::string_view r) {
  if (r.empty() || r.size() > 256) return false;
  return std::all_of(r.begin(), r.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-' || c == ':' || c == '+' || c == '=';
  });
}

bool valid_digest(std::string_view d) {
  const auto colon = d.find(':');
  return valid_reference(d) && colon != std::string_view::npos && colon > 0 && colon + 1 < d.size();
}

// Header values from clients go upstream: no line breaks or NULs.
bool valid_header_value(std::string_view v) {
  return std::none_of(v.begin(), v.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

std::string status_line(unsigned status) {
  return std::to_string(status) + " " +
         std::string(http::obsolete_reason(http::int_to_status(status)));
}

// The first message of an OCI error body, {"errors":[{"code":..,"message":..}]}.
std::string registry_message(std::string_view body) {
  if (body.empty()) return {};
  boost::system::error_code ec;
  const auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return {};
  const auto* errors = v.get_object().if_contains("errors");
  if (!errors || !errors->is_array() || errors->get_array().empty()) return {};
  const auto& first = errors->get_array().front();
  if (!first.is_object()) return {};
  for (const char* key : {"message", "code"}) {
    if (const auto* m = first.get_object().if_contains(key); m && m->is_string()) {
      std::string s(m->get_string());
      if (s.size() > 200) s = s.substr(0, 200) + "…";
      return s;
    }
  }
  return {};
}

bool is_redirect(unsigned status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// A reused keep-alive connection the server closed while it sat in the pool.
bool is_stale(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == http::error::partial_message;
}

error transport_error(const beast::error_code& ec, std::string message) {
  if (ec == asio::error::operation_aborted) return error(errc::cancelled, std::move(message));
  return error(errc::network, std::move(message));
}

std::string range_header(std::uint64_t offset, std::uint64_t end) {
  if (offset == 0 && end == 0) return {};
  std::string r = "bytes=" + std::to_string(offset) + "-";
  if (end > 0) r += std::to_string(end - 1);
  return r;
}

}  // namespace

struct registry_client::impl {
  class stream;

  impl(asio::any_io_executor e, options o)
      : ex(std::move(e)),
        opts(std::move(o)),
        policy(opts.insecure_registries),
        tls(asio::ssl::context::tls_client),
        log(shoal::logger("source")) {
    tls.set_default_verify_paths();
    tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1);
    opts.max_attempts = std::max(opts.max_attempts, 1);
    opts.max_redirects = std::max(opts.max_redirects, 0);
  }

  asio::any_io_executor ex;
  options opts;
  upstream_policy policy;
  asio::ssl::context tls;
  std::shared_ptr<spdlog::logger> log;

  // Guards the pool, the token cache and the remembered challenges. Never
  // held across a co_await.
  std::mutex mu;
  std::map<std::string, std::vector<std::unique_ptr<connection>>> idle;
  token_cache tokens;
  // (client credentials, registry, repository) -> the Bearer challenge last
  // seen, so later requests fetch or reuse a token without a 401 round trip.
  std::map<std::tuple<std::string, std::string, std::string>, bearer_challenge> challenges;

  std::unique_ptr<connection> take_idle(const std::string& key) {
    std::lock_guard lock(mu);
    const auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    const auto now = std::chrono::steady_clock::now();
    while (!it->second.empty()) {
      auto c = std::move(it->second.back());
      it->second.pop_back();
      if (now - c->idle_since < kIdleMaxAge) return c;
    }
    return nullptr;
  }

  void release(std::unique_ptr<connection> c) {
    std::lock_guard lock(mu);
    auto& v = idle[c->key()];
    if (v.size() >= kIdlePerHost) return;
    c->idle_since = std::chrono::steady_clock::now();
    v.push_back(std::move(c));
  }

  asio::awaitable<void> backoff(int failures) {
    const auto delay = std::min<std::chrono::milliseconds>(
        opts.initial_backoff * (1LL << std::min(failures - 1, 20)), kMaxBackoff);
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(delay);
    co_await t.async_wait(nothrow);
  }

  // One request on one connection (a pooled one if there is one; a stale
  // pooled connection is replaced by a fresh one without counting an attempt).
  asio::awaitable<result<exchange>> attempt(url_target url, request_spec spec) {
    for (int round = 0; round < 2; ++round) {
      std::unique_ptr<connection> conn = round == 0 ? take_idle(pool_key(url)) : nullptr;
      const bool reused = conn != nullptr;
      if (!conn) {
        auto c = co_await connection::open(ex, &tls, &policy, url, opts.connect_timeout, spec.what);
        if (!c) co_return std::move(c).error();
        conn = std::move(*c);
      }

      http::request<http::empty_body> req{spec.method, url.target, 11};
      req.set(http::field::host, url.authority());
      req.set(http::field::user_agent, opts.user_agent);
      if (!spec.accept.empty()) req.set(http::field::accept, spec.accept);
      if (!spec.authorization.empty()) req.set(http::field::authorization, spec.authorization);
      if (!spec.range.empty()) req.set(http::field::range, spec.range);
      conn->tcp().expires_after(opts.idle_timeout);
      if (auto ec = co_await conn->write(req)) {
        if (reused) continue;
        co_return transport_error(ec, spec.what + ": sending the request to " + url.authority() +
                                          " failed: " + ec.message());
      }

      auto hp = std::make_unique<http::response_parser<http::empty_body>>();
      hp->header_limit(kHeaderLimit);
      hp->body_limit(boost::none);  // limits are applied per body type below
      if (spec.method == http::verb::head) hp->skip(true);
      conn->tcp().expires_after(opts.idle_timeout);
      if (auto ec = co_await conn->read_header(*hp)) {
        if (reused && is_stale(ec)) continue;
        co_return transport_error(ec, spec.what + ": reading the response from " + url.authority() +
                                          " failed: " + ec.message());
      }

      exchange x;
      x.url = url;
      const auto& h = hp->get();
      x.resp.status = h.result_int();
      x.resp.content_type = std::string(h[http::field::content_type]);
      x.resp.docker_content_digest = std::string(h["Docker-Content-Digest"]);
      for (auto [it, end] = h.equal_range(http::field::www_authenticate); it != end; ++it) {
        if (!x.resp.www_authenticate.empty()) x.resp.www_authenticate += ", ";
        x.resp.www_authenticate += std::string(it->value());
      }
      if (auto cl = h.find(http::field::content_length); cl != h.end()) {
        x.resp.content_length = parse_u64(cl->value());
      }
      x.location = std::string(h[http::field::location]);
      x.content_range = std::string(h[http::field::content_range]);

      const bool success = x.resp.status / 100 == 2;
      if (spec.mode == body_mode::stream && success) {
        x.parser = std::make_unique<http::response_parser<http::buffer_body>>(std::move(*hp));
        x.conn = std::move(conn);
        co_return x;
      }
      if (hp->is_done()) {
        if (hp->keep_alive()) release(std::move(conn));
        co_return x;
      }

      const std::size_t limit =
          success && spec.mode == body_mode::small ? spec.max_body : kErrorBodyLimit;
      auto too_large = [&] {
        return error(errc::too_large,
                     spec.what + " is larger than the " + format_limit(limit) + " limit");
      };
      if (x.resp.content_length && *x.resp.content_length > limit) {
        if (success) co_return too_large();
        co_return x;  // an error page too big to keep: dropped with the connection
      }
      http::response_parser<http::string_body> bp(std::move(*hp));
      bp.body_limit(limit);
      conn->tcp().expires_after(opts.idle_timeout);
      const auto ec = co_await conn->read(bp);
      if (ec == http::error::body_limit) {
        if (success) co_return too_large();
        co_return x;
      }
      if (ec) {
        co_return transport_error(ec, spec.what + ": reading the response body from " +
                                          url.authority() + " failed: " + ec.message());
      }
      x.resp.body = std::move(bp.get().body());
      if (bp.keep_alive()) release(std::move(conn));
      co_return x;
    }
    co_return error(errc::network,
                    spec.what + ": " + url.authority() + " keeps closing connections");
  }

  // attempt() with retries on transport failures and 5xx, with exponential backoff.
  asio::awaitable<result<exchange>> attempt_with_retries(url_target url, request_spec spec) {
    for (int i = 1;; ++i) {
      auto r = co_await attempt(url, spec);
      const bool last = i >= opts.max_attempts;
      if (!r) {
        if (!r.error().is(errc::network)) co_return r;
        if (last) {
          auto e = std::move(r).error();
          if (i > 1) e.message += "; gave up after " + std::to_string(i) + " attempts";
          co_return e;
        }
        log->warn("{}; retrying (attempt {}/{})", r.error().message, i + 1, opts.max_attempts);
      } else if (r->resp.status >= 500 && !last) {
        log->warn("{}: {} answered {}; retrying (attempt {}/{})", spec.what, url.authority(),
                  status_line(r->resp.status), i + 1, opts.max_attempts);
      } else {
        co_return r;
      }
      co_await backoff(i);
    }
  }

  // Follows redirects; credentials are dropped once the origin changes.
  asio::awaitable<result<exchange>> follow(url_target url, request_spec spec) {
    for (int hops = 0;; ++hops) {
      auto r = co_await attempt_with_retries(url, spec);
      if (!r || !is_redirect(r->resp.status) || r->location.empty()) co_return r;
      if (hops >= opts.max_redirects) {
        co_return error(errc::upstream_error,
                        spec.what + ": more than " + std::to_string(opts.max_redirects) +
                            " redirects (the last one from " + url.str() + ")");
      }
      auto next = resolve_location(url, r->location);
      if (!next) co_return error(next.error().code, spec.what + ": " + next.error().message);
      if (auto allowed = policy.check_url(*next, "redirect to"); !allowed) {
        co_return error(errc::forbidden, spec.what + ": " + allowed.error().message);
      }
      if (!next->same_origin(url) && !spec.authorization.empty()) {
        log->debug("{}: redirect from {} to {}: credentials dropped", spec.what, url.authority(),
                   next->authority());
        spec.authorization.clear();
      }
      url = std::move(*next);
    }
  }

  struct token {
    std::string value;
    bool fresh = false;  // just fetched, not from the cache
  };

  // A token for this challenge: from the cache, or from the realm.
  asio::awaitable<result<token>> token_for(std::string client_auth, bearer_challenge ch,
                                           std::string what) {
    std::optional<std::string> cached;
    {
      std::lock_guard lock(mu);
      cached = tokens.get(client_auth, ch, std::chrono::steady_clock::now());
    }
    if (cached) co_return token{*cached, false};
    auto realm = parse_url(ch.realm);
    if (!realm) {
      co_return error(errc::upstream_error,
                      what + ": token realm \"" + ch.realm + "\" is not an http(s) URL");
    }
    if (auto allowed = policy.check_url(*realm, "token realm"); !allowed) {
      co_return error(errc::forbidden, what + ": " + allowed.error().message);
    }
    auto u = boost::urls::parse_uri(ch.realm);
    boost::urls::url token_url(*u);
    token_url.remove_fragment();
    if (!ch.service.empty()) token_url.params().append({"service", ch.service});
    std::size_t start = 0;
    while (start < ch.scope.size()) {
      const auto sp = std::min(ch.scope.find(' ', start), ch.scope.size());
      if (sp > start) token_url.params().append({"scope", ch.scope.substr(start, sp - start)});
      start = sp + 1;
    }
    realm->target = std::string(token_url.encoded_target());
    if (realm->target.empty()) realm->target = "/";

    request_spec ts;
    ts.method = http::verb::get;
    ts.accept = "application/json";
    if (has_auth_scheme(client_auth, "Basic")) ts.authorization = client_auth;
    ts.mode = body_mode::small;
    ts.max_body = kTokenBodyLimit;
    ts.what = what + ": token from " + realm->authority();
    auto r = co_await follow(*realm, ts);
    if (!r) co_return std::move(r).error();
    if (r->resp.status != 200) {
      std::string msg = ts.what + ": " + status_line(r->resp.status);
      if (auto said = registry_message(r->resp.body); !said.empty()) msg += " (" + said + ")";
      if (r->resp.status == 401 || r->resp.status == 403) {
        co_return error(errc::unauthorized, msg + " (check the credentials)");
      }
      co_return error(errc::upstream_error, msg);
    }
    auto reply = parse_token_reply(r->resp.body);
    if (!reply) co_return error(errc::upstream_error, ts.what + ": " + reply.error().message);
    {
      std::lock_guard lock(mu);
      tokens.put(client_auth, ch, reply->token, reply->expires_in,
                 std::chrono::steady_clock::now());
    }
    co_return token{std::move(reply->token), true};
  }

  std::optional<bearer_challenge> remembered(
      const std::tuple<std::string, std::string, std::string>& key) {
    std::lock_guard lock(mu);
    const auto it = challenges.find(key);
    if (it == challenges.end()) return std::nullopt;
    return it->second;
  }

  void remember(const std::tuple<std::string, std::string, std::string>& key,
                const bearer_challenge& ch) {
    std::lock_guard lock(mu);
    if (challenges.size() >= kMaxChallenges) challenges.clear();
    challenges[key] = ch;
  }

  void forget_token(const std::string& client_auth, const bearer_challenge& ch) {
    std::lock_guard lock(mu);
    tokens.erase(client_auth, ch);
  }

  // A registry request with the Bearer token flow on top of redirects and retries.
  asio::awaitable<result<exchange>> send(request_target target, url_target url, request_spec spec) {
    const std::string client_auth = target.authorization;
    spec.authorization = client_auth;
    // A client's own token (or any scheme other than Basic) is passed through as is.
    if (!client_auth.empty() && !has_auth_scheme(client_auth, "Basic")) {
      co_return co_await follow(url, spec);
    }
    const auto key = std::make_tuple(client_auth, target.registry, target.repository);
    std::optional<bearer_challenge> known = remembered(key);
    std::optional<token> sent;
    if (known) {
      auto t = co_await token_for(client_auth, *known, spec.what);
      if (t) {
        spec.authorization = "Bearer " + t->value;
        sent = std::move(*t);
      }
    }
    auto r = co_await follow(url, spec);
    if (!r || r->resp.status != 401) co_return r;
    const auto ch = parse_bearer_challenge(r->resp.www_authenticate);
    if (!ch) co_return r;
    if (sent) {
      forget_token(client_auth, *known);  // refused: do not use it again
      // A token fetched just now for this very challenge would only be
      // refused again: hand the challenge to the client.
      if (sent->fresh && *ch == *known) co_return r;
    }
    remember(key, *ch);
    auto t = co_await token_for(client_auth, *ch, spec.what);
    if (!t) {
      // The client gets the challenge and can run the token flow itself.
      log->info("{}", t.error().message);
      co_return r;
    }
    spec.authorization = "Bearer " + t->value;
    auto again = co_await follow(url, spec);
    if (again && again->resp.status == 401) forget_token(client_auth, *ch);
    co_return again;
  }

  // Validates a target and builds the registry URL for `path` under /v2/<repo>/.
  result<url_target> make_url(const request_target& t, const std::string& path) const {
    if (!t.url.empty() && path.starts_with("blobs/")) {
      if (!valid_header_value(t.authorization))
        return error(errc::invalid_argument, "Authorization header for " + t.url + " contains line breaks");
      auto url = parse_url(t.url);
      if (!url) return std::move(url).error();
      if (auto allowed = policy.check_url(*url, "file URL"); !allowed) return std::move(allowed).error();
      return url;
    }
    if (!valid_repository(t.repository)) {
      return error(errc::invalid_argument,
                   "repository name \"" + t.repository +
                       "\" is invalid (use lower-case letters, digits, '.', '_', '-' and '/')");
    }
    if (!valid_header_value(t.authorization)) {
      return error(errc::invalid_argument, "Authorization header for " + t.registry + "/" +
                                               t.repository + " contains line breaks");
    }
    auto url = policy.registry_url(t.registry);
    if (!url) return std::move(url).error();
    url->target = "/v2/" + t.repository + "/" + path;
    return url;
  }

  // GET of a blob body from `offset` (to `end`, 0 = to the end): a 2xx exchange
  // whose connection is positioned at the body, or an error naming the status.
  asio::awaitable<result<exchange>> open_body(request_target target, std::string digest,
                                              std::uint64_t offset, std::uint64_t end,
                                              std::string what) {
    auto url = make_url(target, "blobs/" + digest);
    if (!url) co_return std::move(url).error();
    request_spec spec;
    spec.method = http::verb::get;
    spec.mode = body_mode::stream;
    spec.range = range_header(offset, end);
    spec.what = what;
    auto r = co_await send(target, *url, spec);
    if (!r) co_return r;
    const unsigned st = r->resp.status;
    if (st == 200) {
      if (offset != 0) {
        co_return error(errc::upstream_error,
                        what + ": " + r->url.authority() + " answered 200 to Range " + spec.range +
                            " (the registry or its storage does not support ranges)");
      }
      co_return r;
    }
    if (st == 206) {
      const auto cr = parse_content_range(r->content_range);
      // A server may send less than asked (the stream asks again for the
      // rest), never more and never from elsewhere.
      const bool ok_range = cr && cr->first == offset && (end == 0 || cr->last < end);
      if (!ok_range) {
        co_return error(errc::upstream_error, what + ": " + r->url.authority() +
                                                  " answered Content-Range \"" + r->content_range +
                                                  "\" to Range " + spec.range);
      }
      co_return r;
    }
    std::string msg = what + ": " + status_line(st);
    if (auto said = registry_message(r->resp.body); !said.empty()) {
      msg += " (registry says: " + said + ")";
    }
    switch (st) {
      case 401:
        co_return error(errc::unauthorized,
                        msg + " (check credentials for " + target.repository + ")");
      case 403:
        co_return error(errc::upstream_error,
                        msg + " (the credentials do not allow pulling " + target.repository + ")");
      case 404:
        co_return error(errc::not_found, msg + " (check the digest and that the blob is in " +
                                             target.repository + ")");
      case 416:
        co_return error(errc::range_not_satisfiable, msg + " (requested " + spec.range + ")");
      default:
        if (st >= 500) {
          co_return error(errc::upstream_error,
                          msg + " after " + std::to_string(opts.max_attempts) +
                              " attempts (the registry is failing; try again later)");
        }
        co_return error(errc::upstream_error, msg);
    }
  }
};

// A blob body being read; on a broken connection it re-requests the rest with Range.
class registry_client::impl::stream final : public blob_stream {
 public:
  stream(std::shared_ptr<impl> client, request_target target, std::string digest, std::string what,
         std::uint64_t offset, std::uint64_t end, exchange x)
      : client_(std::move(client)),
        target_(std::move(target)),
        digest_(std::move(digest)),
        what_(std::move(what)),
        offset_(offset),
        end_(end) {
    adopt(std::move(x));
  }

  asio::awaitable<result<std::size_t>> read_some(std::span<char> out) override {
    if (out.empty() || finished_) co_return std::size_t{0};
    int failures = 0;
    for (;;) {
      if (end_ > 0 && offset_ >= end_) {
        finish();
        co_return std::size_t{0};
      }
      const std::size_t want =
          end_ > 0 ? static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), end_ - offset_))
                   : out.size();
      if (!conn_) {
        auto x = co_await client_->open_body(target_, digest_, offset_, end_, what_);
        if (!x) co_return std::move(x).error();
        adopt(std::move(*x));
      }
      if (body_done()) {
        if (end_ == 0 || offset_ >= end_) {
          finish();
          co_return std::size_t{0};
        }
        // A complete response that stopped short of the end (a shorter 206):
        // ask for the rest.
        release_connection();
        if (++failures >= client_->opts.max_attempts) {
          co_return error(errc::upstream_error,
                          what_ + ": the registry keeps ending the body at byte " +
                              std::to_string(offset_) + " of " + std::to_string(end_));
        }
        continue;
      }
      conn_->tcp().expires_after(client_->opts.idle_timeout);
      beast::error_code ec;
      std::size_t got = 0;
      if (raw_left_) {
        // Content-Length body: read straight into the caller's buffer.
        auto n = static_cast<std::size_t>(std::min<std::uint64_t>(want, *raw_left_));
        std::tie(ec, got) = co_await conn_->read_raw(out.subspan(0, n));
        *raw_left_ -= got;
        if (!ec && got == 0) ec = asio::error::eof;
      } else {
        auto& body = parser_->get().body();
        body.data = out.data();
        body.size = want;
        body.more = true;
        ec = co_await conn_->read_some(*parser_);
        got = want - body.size;
      }
      offset_ += got;
      if (!ec) {
        if (got > 0) co_return got;
        continue;  // only framing (a chunk header) was parsed, or the body just ended
      }
      conn_.reset();
      parser_.reset();
      if (ec == asio::error::operation_aborted) {
        co_return error(errc::cancelled, what_ + ": cancelled at byte " + std::to_string(offset_));
      }
      if (got > 0) co_return got;  // hand out what arrived; the next call resumes
      if (++failures >= client_->opts.max_attempts) {
        co_return error(errc::network, what_ + ": connection lost at byte " +
                                           std::to_string(offset_) + ": " + ec.message() +
                                           "; gave up after " + std::to_string(failures) +
                                           " attempts to resume");
      }
      client_->log->warn("{}: connection lost at byte {} ({}); resuming with Range", what_, offset_,
                         ec.message());
      co_await client_->backoff(failures);
    }
  }

  std::uint64_t offset() const override { return offset_; }

 private:
  void adopt(exchange x) {
    conn_ = std::move(x.conn);
    parser_ = std::move(x.parser);
    raw_left_.reset();
    if (!parser_->chunked() && parser_->content_length())
      raw_left_ = *parser_->content_length();
    // Learn where the body ends, so a resumed request asks for exactly the rest.
    if (x.resp.status == 206) {
      // Never ask beyond the blob's end, even if the caller's `end` did.
      if (auto cr = parse_content_range(x.content_range); cr && cr->total) {
        end_ = end_ == 0 ? *cr->total : std::min(end_, *cr->total);
      }
    } else if (end_ == 0 && x.resp.content_length) {
      end_ = offset_ + *x.resp.content_length;
    }
  }

  // Keeps the connection for reuse if its response was read to the end.
  void release_connection() {
    if (conn_ && parser_ && body_done() && parser_->keep_alive()) {
      client_->release(std::move(conn_));
    }
    conn_.reset();
    parser_.reset();
  }

  bool body_done() const { return raw_left_ ? *raw_left_ == 0 : parser_->is_done(); }

  // The body is over (or no longer wanted): keep the connection only if the
  // response was read to its end.
  void finish() {
    finished_ = true;
    release_connection();
  }

  std::shared_ptr<impl> client_;
  request_target target_;
  std::string digest_;
  std::string what_;
  std::uint64_t offset_;
  std::uint64_t end_;  // 0 = unknown (chunked 200)
  std::unique_ptr<connection> conn_;
  std::unique_ptr<http::response_parser<http::buffer_body>> parser_;
  std::optional<std::uint64_t> raw_left_;  // body bytes left when read raw
  bool finished_ = false;
};

registry_client::registry_client(asio::any_io_executor ex, options opts)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(opts))) {}

registry_client::~registry_client() = default;

result<std::string> registry_client::scheme_for(const std::string& registry) const {
  return impl_->policy.scheme_for(registry);
}

asio::awaitable<result<response>> registry_client::manifest(request_target target,
                                                            std::string reference,
                                                            std::string accept, bool head,
                                                            std::size_t max_body) {
  auto self = impl_;
  if (!valid_reference(reference)) {
    co_return error(errc::invalid_argument,
                    "manifest reference \"" + reference + "\" is not a tag or a digest");
  }
  if (!valid_header_value(accept)) {
    co_return error(errc::invalid_argument,
                    "Accept header for manifest " + reference + " contains line breaks");
  }
  auto url = self->make_url(target, "manifests/" + reference);
  if (!url) co_return std::move(url).error();
  request_spec spec;
  spec.method = head ? http::verb::head : http::verb::get;
  spec.accept = std::move(accept);
  spec.mode = head ? body_mode::none : body_mode::small;
  spec.max_body = max_body;
  spec.what = "manifest " + reference + " from " + target.registry + "/" + target.repository;
  auto r = co_await self->send(target, std::move(*url), std::move(spec));
  if (!r) co_return std::move(r).error();
  co_return std::move(r->resp);
}

asio::awaitable<result<response>> registry_client::ping(request_target target) {
  auto self = impl_;
  if (!valid_header_value(target.authorization)) {
    co_return error(errc::invalid_argument,
                    "Authorization header for " + target.registry + " contains line breaks");
  }
  auto url = self->policy.registry_url(target.registry);
  if (!url) co_return std::move(url).error();
  url->target = "/v2/";
  request_spec spec;
  spec.method = http::verb::get;
  spec.authorization = target.authorization;
  spec.mode = body_mode::small;
  spec.max_body = kErrorBodyLimit;
  spec.what = "API version check of " + target.registry;
  // No token flow here: the point is to hand the registry's own challenge to
  // the client, so it learns how to authenticate before its first pull.
  auto r = co_await self->follow(std::move(*url), std::move(spec));
  if (!r) co_return std::move(r).error();
  co_return std::move(r->resp);
}

asio::awaitable<result<response>> registry_client::head_blob(request_target target,
                                                             std::string digest) {
  auto self = impl_;
  if (!valid_digest(digest)) {
    co_return error(errc::invalid_argument, "\"" + digest + "\" is not a blob digest");
  }
  auto url = self->make_url(target, "blobs/" + digest);
  if (!url) co_return std::move(url).error();
  request_spec spec;
  spec.method = http::verb::head;
  spec.mode = body_mode::none;
  spec.what = "blob " + short_digest(digest) + " from " + target.registry + "/" + target.repository;
  auto r = co_await self->send(target, std::move(*url), std::move(spec));
  if (!r) co_return std::move(r).error();
  co_return std::move(r->resp);
}

asio::awaitable<result<std::unique_ptr<blob_stream>>> registry_client::open_blob(
    request_target target, std::string digest, std::uint64_t offset, std::uint64_t end) {
  auto self = impl_;
  if (!valid_digest(digest)) {
    co_return error(errc::invalid_argument, "\"" + digest + "\" is not a blob digest");
  }
  std::string what =
      "blob " + short_digest(digest) + " from " + target.registry + "/" + target.repository;
  if (end > 0 && end <= offset) {
    co_return error(errc::invalid_argument,
                    what + ": empty range " + std::to_string(offset) + "-" + std::to_string(end));
  }
  auto x = co_await self->open_body(target, digest, offset, end, what);
  if (!x) co_return std::move(x).error();
  co_return std::unique_ptr<blob_stream>(std::make_unique<impl::stream>(
      self, std::move(target), std::move(digest), std::move(what), offset, end, std::move(*x)));
}

}  // namespace shoal::source
