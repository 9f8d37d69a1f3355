#include "daemon/source/uploader.h"

// GCC 12 reports -Wmismatched-new-delete on every Asio awaitable frame: a known
// false positive (the frame's class-specific operator new/delete do match).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "common/log.h"
#include "common/sha256.h"
#include "daemon/source/bearer.h"
#include "daemon/source/connection.h"
#include "daemon/source/upstream_policy.h"

namespace shoal::source {
namespace {

constexpr std::uint32_t kHeaderLimit = 64 * 1024;
constexpr std::size_t kBodyLimit = 1 << 20;  // error JSON and token replies
constexpr std::size_t kWriteBuffer = 1 << 20;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

std::string status_line(unsigned status) {
  return std::to_string(status) + " " +
         std::string(http::obsolete_reason(http::int_to_status(status)));
}

std::string registry_message(std::string_view body) {
  boost::system::error_code ec;
  const auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return {};
  const auto* errors = v.get_object().if_contains("errors");
  if (!errors || !errors->is_array() || errors->get_array().empty()) return {};
  const auto& first = errors->get_array().front();
  if (!first.is_object()) return {};
  std::string out;
  for (const char* key : {"code", "message"}) {
    if (const auto* m = first.get_object().if_contains(key); m && m->is_string()) {
      if (!out.empty()) out += ": ";
      out += std::string(m->get_string());
    }
  }
  if (out.size() > 300) out = out.substr(0, 300) + "…";
  return out;
}

// The end offset of a registry's upload Range header "0-<last>"; nullopt if malformed.
std::optional<std::uint64_t> upload_range_end(std::string_view r) {
  if (r.starts_with("bytes=")) r.remove_prefix(6);
  const auto dash = r.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  std::uint64_t last = 0;
  auto s = r.substr(dash + 1);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), last);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return last;
}

std::string short_digest(const digest& d) { return "sha256:" + d.hex.substr(0, 12) + "…"; }

// A request body: bytes in memory or a range of an open file.
struct body_spec {
  std::string_view bytes;
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t size() const { return fd >= 0 ? length : bytes.size(); }
};

struct reply {
  unsigned status = 0;
  std::string location;
  std::string range;
  std::string www_authenticate;
  std::string docker_content_digest;
  std::string body;
};

using headers = std::vector<std::pair<std::string, std::string>>;

headers one_header(std::string k, std::string v) {
  headers h;
  h.emplace_back(std::move(k), std::move(v));
  return h;
}

headers patch_headers(const std::string& range) {
  headers h = one_header("Content-Type", "application/octet-stream");
  h.emplace_back("Content-Range", range);
  return h;
}

struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

struct uploader::impl {
  impl(asio::any_io_executor e, upload_options o)
      : ex(std::move(e)),
        opts(std::move(o)),
        policy(opts.insecure_registries),
        tls(asio::ssl::context::tls_client),
        log(shoal::logger("upload")) {
    tls.set_default_verify_paths();
    tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1);
    opts.max_attempts = std::max(opts.max_attempts, 1);
    opts.chunk_size = std::max<std::uint64_t>(opts.chunk_size, 1);
  }

  asio::any_io_executor ex;
  upload_options opts;
  upstream_policy policy;
  asio::ssl::context tls;
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<connection> conn;
  token_cache tokens;
  std::optional<bearer_challenge> challenge;  // last Bearer challenge seen
  bool basic_challenged = false;

  asio::awaitable<void> backoff(int failures) {
    const auto delay = std::min<std::chrono::milliseconds>(
        opts.initial_backoff * (1LL << std::min(failures - 1, 10)), std::chrono::seconds(30));
    asio::steady_timer t(ex);
    t.expires_after(delay);
    co_await t.async_wait(nothrow);
  }

  // One request/response on the kept connection (opened if needed). Transport
  // failures are errc::network; any status is a value.
  asio::awaitable<result<reply>> once(http::verb method, url_target url, std::string auth,
                                      headers hdrs,
                                      body_spec body, std::string what) {
    if (conn && conn->key() != pool_key(url)) conn.reset();
    if (!conn) {
      auto c = co_await connection::open(ex, &tls, &policy, url, opts.connect_timeout, what);
      if (!c) co_return std::move(c).error();
      conn = std::move(*c);
    }
    http::request<http::empty_body> req{method, url.target, 11};
    req.set(http::field::host, url.authority());
    req.set(http::field::user_agent, opts.user_agent);
    if (!auth.empty()) req.set(http::field::authorization, auth);
    for (auto& [k, v] : hdrs) req.set(k, v);
    if (method != http::verb::head && method != http::verb::get)
      req.set(http::field::content_length, std::to_string(body.size()));
    auto fail = [&](const beast::error_code& ec, const std::string& doing) -> error {
      conn.reset();
      if (ec == asio::error::operation_aborted)
        return error(errc::cancelled, what + ": cancelled");
      return error(errc::network, what + ": " + doing + " " + url.authority() + " failed: " +
                                      ec.message());
    };
    conn->tcp().expires_after(opts.idle_timeout);
    if (auto ec = co_await conn->write(req)) co_return fail(ec, "sending the request to");
    if (body.fd >= 0) {
      std::vector<char> buf(static_cast<std::size_t>(std::min<std::uint64_t>(kWriteBuffer, body.length)));
      std::uint64_t off = body.offset;
      std::uint64_t left = body.length;
      while (left > 0) {
        const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
        const ssize_t n = ::pread(body.fd, buf.data(), want, static_cast<off_t>(off));
        if (n <= 0) {
          conn.reset();
          co_return error(errc::io, what + ": reading the file at offset " + std::to_string(off) +
                                        " failed" + (n < 0 ? std::string(": ") + std::strerror(errno) : " (file shrank)"));
        }
        conn->tcp().expires_after(opts.idle_timeout);
        if (auto ec = co_await conn->write_raw(std::span<const char>(buf.data(), static_cast<std::size_t>(n))))
          co_return fail(ec, "sending the body to");
        off += static_cast<std::uint64_t>(n);
        left -= static_cast<std::uint64_t>(n);
      }
    } else if (!body.bytes.empty()) {
      conn->tcp().expires_after(opts.idle_timeout);
      if (auto ec = co_await conn->write_raw(std::span<const char>(body.bytes.data(), body.bytes.size())))
        co_return fail(ec, "sending the body to");
    }
    http::response_parser<http::empty_body> hp;
    hp.header_limit(kHeaderLimit);
    hp.body_limit(boost::none);
    if (method == http::verb::head) hp.skip(true);
    conn->tcp().expires_after(opts.idle_timeout);
    if (auto ec = co_await conn->read_header(hp)) co_return fail(ec, "reading the response from");
    reply r;
    const auto& h = hp.get();
    r.status = h.result_int();
    r.location = std::string(h[http::field::location]);
    r.range = std::string(h["Range"]);
    r.docker_content_digest = std::string(h["Docker-Content-Digest"]);
    for (auto [it, end] = h.equal_range(http::field::www_authenticate); it != end; ++it) {
      if (!r.www_authenticate.empty()) r.www_authenticate += ", ";
      r.www_authenticate += std::string(it->value());
    }
    bool keep = hp.keep_alive();
    if (!hp.is_done()) {
      http::response_parser<http::string_body> bp(std::move(hp));
      bp.body_limit(kBodyLimit);
      conn->tcp().expires_after(opts.idle_timeout);
      auto ec = co_await conn->read(bp);
      if (ec == http::error::body_limit) {
        keep = false;
      } else if (ec) {
        co_return fail(ec, "reading the response body from");
      } else {
        r.body = std::move(bp.get().body());
        keep = bp.keep_alive();
      }
    }
    if (!keep) conn.reset();
    co_return r;
  }

  // The Authorization to send: a cached token for the last Bearer challenge,
  // or the Basic credentials once the registry asked for them (or always
  // when there was no challenge yet: most registries then answer 401 anyway).
  std::string current_auth() {
    if (challenge) {
      if (auto t = tokens.get(opts.authorization, *challenge, std::chrono::steady_clock::now()))
        return "Bearer " + *t;
    }
    return opts.authorization;
  }

  asio::awaitable<result<void>> fetch_token(bearer_challenge ch, std::string what) {
    auto realm = parse_url(ch.realm);
    if (!realm)
      co_return error(errc::upstream_error, what + ": token realm \"" + ch.realm + "\" is not an http(s) URL");
    if (auto allowed = policy.check_url(*realm, "token realm"); !allowed)
      co_return error(errc::forbidden, what + ": " + allowed.error().message);
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
    const std::string twhat = what + ": token from " + realm->authority();
    headers accept;
    accept.emplace_back("Accept", "application/json");
    auto r = co_await once(http::verb::get, *realm, opts.authorization, std::move(accept), {}, twhat);
    if (!r) co_return std::move(r).error();
    if (r->status != 200) {
      std::string msg = twhat + ": " + status_line(r->status);
      if (r->status == 401 || r->status == 403)
        co_return error(errc::unauthorized,
                        msg + " (check --username/--password or SHOAL_REGISTRY_USERNAME/_PASSWORD)");
      co_return error(errc::upstream_error, msg);
    }
    auto reply_tok = parse_token_reply(r->body);
    if (!reply_tok) co_return error(errc::upstream_error, twhat + ": " + reply_tok.error().message);
    tokens.put(opts.authorization, ch, reply_tok->token, reply_tok->expires_in,
               std::chrono::steady_clock::now());
    co_return ok();
  }

  // once() with auth (one retry after a 401 challenge) and, for requests
  // that can be repeated, retries with backoff on transport failures and 5xx.
  asio::awaitable<result<reply>> request(http::verb method, url_target url,
                                         headers hdrs,
                                         body_spec body, std::string what, bool retry) {
    for (int attempt = 1;; ++attempt) {
      bool authed_again = false;
      result<reply> r = error(errc::network, what);
      for (;;) {
        r = co_await once(method, url, current_auth(), hdrs, body, what);
        if (!r || r->status != 401 || authed_again) break;
        authed_again = true;
        if (auto ch = parse_bearer_challenge(r->www_authenticate)) {
          challenge = *ch;
          tokens.erase(opts.authorization, *ch);
          auto t = co_await fetch_token(*ch, what);
          if (!t) co_return std::move(t).error();
          continue;
        }
        if (!opts.authorization.empty() && !basic_challenged) {
          basic_challenged = true;
          continue;
        }
        break;
      }
      const bool transient = !r ? r.error().is(errc::network) : r->status >= 500;
      if (!transient || !retry || attempt >= opts.max_attempts) {
        if (!r && attempt > 1) {
          auto e = std::move(r).error();
          e.message += "; gave up after " + std::to_string(attempt) + " attempts";
          co_return e;
        }
        co_return r;
      }
      log->warn("{}; retrying (attempt {}/{})",
                r ? what + ": " + status_line(r->status) : r.error().message, attempt + 1,
                opts.max_attempts);
      co_await backoff(attempt);
    }
  }

  error status_error(const std::string& what, const reply& r, const upload_target& t) {
    std::string msg = what + ": " + status_line(r.status);
    if (auto said = registry_message(r.body); !said.empty()) msg += " (registry says: " + said + ")";
    if (r.status == 401)
      return error(errc::unauthorized, msg + " (check credentials for " + t.repository +
                                           ": --username/--password or SHOAL_REGISTRY_USERNAME/_PASSWORD)");
    if (r.status == 403)
      return error(errc::unauthorized, msg + " (the credentials may not push to " + t.repository + ")");
    if (r.status == 404) return error(errc::not_found, msg);
    return error(errc::upstream_error, msg);
  }

  result<url_target> registry_url(const upload_target& t, const std::string& path) const {
    auto url = policy.registry_url(t.registry);
    if (!url) return std::move(url).error();
    url->target = "/v2/" + t.repository + "/" + path;
    return url;
  }

  // A Location from the registry, resolved and checked against the policy.
  result<url_target> follow(const url_target& base, const std::string& location,
                            const std::string& what) const {
    if (location.empty())
      return error(errc::upstream_error, what + ": the registry sent no Location for the upload");
    auto next = resolve_location(base, location);
    if (!next) return error(next.error().code, what + ": " + next.error().message);
    if (auto allowed = policy.check_url(*next, "upload location"); !allowed)
      return error(errc::forbidden, what + ": " + allowed.error().message);
    if (!next->same_origin(base))
      return error(errc::unsupported, what + ": the registry moved the upload to another host (" +
                                          next->authority() + "), which shoalctl does not follow");
    return next;
  }

  // ---- upload URLs kept on disk

  std::filesystem::path state_path(const upload_target& t, const digest& d) const {
    return opts.state_dir / (sha256_hex(t.registry + "/" + t.repository + "@" + d.str()) + ".upload");
  }
  std::optional<url_target> load_state(const upload_target& t, const digest& d) const {
    if (opts.state_dir.empty()) return std::nullopt;
    std::ifstream in(state_path(t, d));
    std::string line;
    if (!in || !std::getline(in, line) || line.size() > 8192) return std::nullopt;
    auto u = parse_url(line);
    auto base = policy.registry_url(t.registry);
    if (!u || !base || !u->same_origin(*base)) return std::nullopt;
    return *u;
  }
  void save_state(const upload_target& t, const digest& d, const url_target& u) const {
    if (opts.state_dir.empty()) return;
    std::error_code ec;
    std::filesystem::create_directories(opts.state_dir, ec);
    const auto p = state_path(t, d);
    const auto tmp = p.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << u.str() << "\n";
      if (!out) return;
    }
    std::filesystem::rename(tmp, p, ec);
  }
  void drop_state(const upload_target& t, const digest& d) const {
    if (opts.state_dir.empty()) return;
    std::error_code ec;
    std::filesystem::remove(state_path(t, d), ec);
  }

  // GET on an upload URL: how much the registry holds and the URL to go on
  // with; nullopt when it no longer knows (or will not resume) the upload.
  asio::awaitable<std::optional<std::pair<url_target, std::uint64_t>>> upload_status(
      url_target at, std::string what) {
    auto r = co_await request(http::verb::get, at, {}, {}, what + ": upload status", true);
    if (!r || r->status != 204) co_return std::nullopt;
    std::uint64_t offset = 0;
    if (auto end = upload_range_end(r->range); end && *end > 0) offset = *end + 1;
    url_target next = at;
    if (!r->location.empty()) {
      auto f = follow(at, r->location, what);
      if (!f) co_return std::nullopt;
      next = *f;
    }
    co_return std::make_pair(next, offset);
  }

  asio::awaitable<result<url_target>> start_upload(upload_target t, std::string what) {
    auto url = registry_url(t, "blobs/uploads/");
    if (!url) co_return std::move(url).error();
    auto r = co_await request(http::verb::post, *url, {}, {}, what + ": starting the upload", true);
    if (!r) co_return std::move(r).error();
    if (r->status != 202) co_return status_error(what + ": starting the upload", *r, t);
    co_return follow(*url, r->location, what);
  }
};

uploader::uploader(asio::any_io_executor ex, upload_options opts)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(opts))) {}

uploader::~uploader() = default;

asio::awaitable<result<bool>> uploader::has_blob(upload_target t, digest d) {
  auto self = impl_;
  auto url = self->registry_url(t, "blobs/" + d.str());
  if (!url) co_return std::move(url).error();
  const std::string what = "blob " + short_digest(d) + " at " + t.registry + "/" + t.repository;
  auto r = co_await self->request(http::verb::head, *url, {}, {}, what, true);
  if (!r) co_return std::move(r).error();
  if (r->status == 200) co_return true;
  if (r->status == 404) co_return false;
  co_return self->status_error(what, *r, t);
}

asio::awaitable<result<upload_stats>> uploader::push_blob(upload_target t, digest d,
                                                          std::uint64_t size, blob_body body,
                                                          std::function<void(std::uint64_t)> progress) {
  auto self = impl_;
  const std::string what = "blob " + short_digest(d) + " to " + t.registry + "/" + t.repository;
  upload_stats stats;
  auto has = co_await has_blob(t, d);
  if (!has) co_return std::move(has).error();
  if (*has) {
    self->drop_state(t, d);
    co_return stats;
  }
  stats.outcome = upload_outcome::uploaded;
  fd_guard file;
  if (!body.file.empty()) {
    file.fd = ::open(body.file.c_str(), O_RDONLY | O_CLOEXEC);
    if (file.fd < 0)
      co_return error(errc::io, what + ": cannot open " + body.file.string() + ": " + std::strerror(errno));
  }

  // Where to upload: a kept upload the registry still knows, else a new one.
  url_target at;
  std::uint64_t offset = 0;
  if (auto kept = self->load_state(t, d)) {
    if (auto st = co_await self->upload_status(*kept, what); st && st->second <= size) {
      at = st->first;
      offset = st->second;
      stats.resumed_from = offset;
      self->log->info("{}: resuming an earlier upload at byte {}", what, offset);
    }
  }
  if (at.host.empty()) {
    auto s = co_await self->start_upload(t, what);
    if (!s) co_return std::move(s).error();
    at = *s;
  }
  self->save_state(t, d, at);

  int failures = 0;
  while (offset < size) {
    const std::uint64_t n = std::min(self->opts.chunk_size, size - offset);
    body_spec chunk;
    if (file.fd >= 0) {
      chunk.fd = file.fd;
      chunk.offset = offset;
      chunk.length = n;
    } else {
      chunk.bytes = std::string_view(body.bytes).substr(offset, n);
    }
    const std::string range = std::to_string(offset) + "-" + std::to_string(offset + n - 1);
    auto r = co_await self->request(http::verb::patch, at,
                                    patch_headers(range),
                                    chunk, what + ": chunk " + range, false);
    stats.bytes_sent += n;
    if (r && r->status == 202) {
      auto next = self->follow(at, r->location, what);
      if (!next) co_return std::move(next).error();
      at = *next;
      std::uint64_t confirmed = offset + n;
      if (auto end = upload_range_end(r->range)) confirmed = *end + 1;
      if (confirmed <= offset || confirmed > size)
        co_return error(errc::upstream_error, what + ": the registry confirmed bytes 0-" + r->range +
                                                  " after a chunk " + range);
      offset = confirmed;
      failures = 0;
      self->save_state(t, d, at);
      if (progress) progress(offset);
      continue;
    }
    if (r && r->status < 500 && r->status != 416)
      co_return self->status_error(what + ": chunk " + range, *r, t);
    if (!r && !r.error().is(errc::network)) co_return std::move(r).error();
    // A broken connection, a 5xx or a range mismatch: ask where the upload
    // stands and go on from there, or start it over.
    if (++failures >= self->opts.max_attempts) {
      co_return error(errc::network, (r ? what + ": chunk " + range + ": " + status_line(r->status)
                                        : r.error().message) +
                                         "; gave up after " + std::to_string(failures) +
                                         " failed chunks in a row (rerun the push to resume)");
    }
    self->log->warn("{}; asking the registry where the upload stands (attempt {}/{})",
                    r ? what + ": chunk " + range + ": " + status_line(r->status) : r.error().message,
                    failures + 1, self->opts.max_attempts);
    co_await self->backoff(failures);
    if (auto st = co_await self->upload_status(at, what); st && st->second <= size) {
      at = st->first;
      offset = st->second;
      stats.resumed_from = offset;
      self->log->info("{}: resuming at byte {}", what, offset);
    } else {
      self->log->warn("{}: the registry dropped the upload; starting it over", what);
      auto s = co_await self->start_upload(t, what);
      if (!s) co_return std::move(s).error();
      at = *s;
      offset = 0;
      ++stats.restarts;
    }
    self->save_state(t, d, at);
  }

  // Finish: PUT <upload URL>&digest=<digest>.
  url_target fin = at;
  fin.target += (fin.target.find('?') == std::string::npos ? "?" : "&");
  fin.target += "digest=" + d.str();
  auto r = co_await self->request(http::verb::put, fin, one_header("Content-Type", "application/octet-stream"), {}, what + ": completing the upload", false);
  if (!r) co_return std::move(r).error();
  if (r->status != 201 && r->status != 204) {
    // The registry may have checked the digest and refused; do not resume that upload.
    self->drop_state(t, d);
    co_return self->status_error(what + ": completing the upload", *r, t);
  }
  if (!r->docker_content_digest.empty() && r->docker_content_digest != d.str()) {
    self->drop_state(t, d);
    co_return error(errc::digest_mismatch, what + ": the registry stored " + r->docker_content_digest +
                                              " (the file changed during the push?)");
  }
  self->drop_state(t, d);
  if (progress) progress(size);
  co_return stats;
}

asio::awaitable<result<std::string>> uploader::put_manifest(upload_target t, std::string reference,
                                                            std::string media_type, std::string body) {
  auto self = impl_;
  auto url = self->registry_url(t, "manifests/" + reference);
  if (!url) co_return std::move(url).error();
  const std::string what = "manifest " + reference + " to " + t.registry + "/" + t.repository;
  body_spec b;
  b.bytes = body;
  auto r = co_await self->request(http::verb::put, *url, one_header("Content-Type", media_type), b, what, true);
  if (!r) co_return std::move(r).error();
  if (r->status != 201 && r->status != 200) co_return self->status_error(what, *r, t);
  if (!r->docker_content_digest.empty()) co_return r->docker_content_digest;
  co_return "sha256:" + sha256_hex(body);
}

}  // namespace shoal::source
