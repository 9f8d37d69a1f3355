#include "daemon/mirror/mirror.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/url/parse.hpp>
#include <charconv>
#include <optional>
#include <vector>

#include "common/digest.h"
#include "common/log.h"
#include "common/piece.h"
#include "common/reference.h"
#include "common/sha256.h"
#include "daemon/mirror/range.h"
#include "daemon/mirror/send_file.h"

namespace shoal::mirror {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using asio::awaitable;
using http::status;

namespace {
auto log() { return logger("mirror"); }

constexpr std::string_view kDefaultManifestAccept =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

const char* kind_name(int what) {
  static constexpr const char* names[] = {"base", "manifest", "blob", "other"};
  return names[what];
}

// Writes a header-only response (HEAD, or the header before a streamed body).
awaitable<bool> write_header(http::beast::tcp_stream& stream,
                             bhttp::response<bhttp::empty_body>& res) {
  bhttp::response_serializer<bhttp::empty_body> sr{res};
  stream.expires_after(std::chrono::seconds(60));
  auto [ec, n] =
      co_await bhttp::async_write_header(stream, sr, asio::as_tuple(asio::use_awaitable));
  co_return !ec;
}

std::string query_param(const boost::urls::url_view& u, std::string_view key) {
  for (auto p : u.params())
    if (p.key == key) return std::string(p.value);
  return {};
}
}  // namespace

struct mirror::route {
  enum class kind { base, manifest, blob, other } what = kind::other;
  std::string name;
  std::string ref;
  std::string registry;  // upstream host[:port]
  source::request_target target(const http::request& req) const {
    return {registry, name, std::string(req[bhttp::field::authorization])};
  }
};

mirror::mirror(source::registry_client& origin, transfer::task_manager& tasks,
               storage::store& store, metrics::registry& reg, options opts)
    : origin_(origin),
      tasks_(tasks),
      store_(store),
      opts_(std::move(opts)),
      requests_(reg.add_counter("shoal_mirror_requests_total",
                                "Requests to the mirror by method, kind and status code",
                                {"method", "kind", "code"})),
      client_bytes_(reg.add_counter("shoal_mirror_client_bytes_total",
                                    "Blob body bytes sent to local clients")
                        .with()),
      cache_hits_(reg.add_counter("shoal_cache_hits_total",
                                  "Blob requests served from a complete cached task")
                      .with()),
      cache_misses_(
          reg.add_counter("shoal_cache_misses_total", "Blob requests that needed a download")
              .with()),
      cache_bytes_(transfer::bytes_by_source(reg).with({"cache"})),
      storage_failures_(transfer::failures_by_kind(reg).with({"storage"})) {}

awaitable<bool> mirror::handle(http::request req, http::beast::tcp_stream& stream) {
  route r;

  auto parsed = boost::urls::parse_origin_form(req.target());
  if (!parsed)
    co_return co_await reply_error(req, stream, kind_name(static_cast<int>(r.what)),
                                   status::bad_request, "BAD_REQUEST", "malformed request target");
  std::string path = parsed->path();
  if (path.rfind("/v2/", 0) != 0 && path != "/v2")
    co_return co_await reply_error(
        req, stream, kind_name(static_cast<int>(r.what)), status::not_found, "NOT_FOUND",
        "unknown path " + path + " (this is an OCI registry mirror: /v2/...)");
  if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) {
    co_return co_await reply_error(req, stream, kind_name(static_cast<int>(r.what)),
                                   status::method_not_allowed, "UNSUPPORTED",
                                   "the mirror is read-only: push to the registry itself");
  }
  std::string ns = query_param(*parsed, "ns");
  r.registry = ns.empty() ? opts_.default_registry : canonical_registry_host(ns);

  if (path == "/v2/" || path == "/v2") {
    r.what = route::kind::base;
    co_return co_await handle_base(req, r, stream);
  }
  std::string rest = path.substr(4);
  for (auto [marker, kind] : {std::pair{std::string_view("/manifests/"), route::kind::manifest},
                              std::pair{std::string_view("/blobs/"), route::kind::blob}}) {
    auto pos = rest.rfind(marker);
    if (pos == std::string::npos) continue;
    r.what = kind;
    r.name = rest.substr(0, pos);
    r.ref = rest.substr(pos + marker.size());
    break;
  }
  if (r.what == route::kind::other || r.ref.empty() || r.ref.find('/') != std::string::npos)
    co_return co_await reply_error(req, stream, kind_name(static_cast<int>(r.what)),
                                   status::not_found, "NOT_FOUND",
                                   "unknown path " + path +
                                       " (the mirror serves /v2/<name>/manifests/<ref> and "
                                       "/v2/<name>/blobs/<digest>)");
  if (!valid_repository(r.name))
    co_return co_await reply_error(req, stream, kind_name(static_cast<int>(r.what)),
                                   status::bad_request, "NAME_INVALID",
                                   "invalid repository name '" + r.name + "'");
  if (r.registry.empty())
    co_return co_await reply_error(
        req, stream, kind_name(static_cast<int>(r.what)), status::bad_request, "UNKNOWN_UPSTREAM",
        "no upstream registry: the client sent no ns= parameter and shoald "
        "has no --default-registry");
  if (auto scheme = origin_.scheme_for(r.registry); !scheme)
    co_return co_await reply_error(req, stream, kind_name(static_cast<int>(r.what)),
                                   status::forbidden, "DENIED", scheme.error().message);

  bool keep = r.what == route::kind::manifest ? co_await handle_manifest(req, r, stream)
                                              : co_await handle_blob(req, r, stream);
  co_return keep;
}

awaitable<bool> mirror::reply_error(const http::request& req, http::beast::tcp_stream& stream,
                                    std::string_view kind, status st, std::string_view code,
                                    std::string message) {
  requests_
      .with({std::string(req.method_string()), std::string(kind),
             std::to_string(static_cast<unsigned>(st))})
      .inc();
  co_return co_await http::send_oci_error(stream, req, st, code, message);
}

awaitable<bool> mirror::reply_manifest(const http::request& req, http::beast::tcp_stream& stream,
                                       std::string media_type, std::string body,
                                       std::string digest) {
  bhttp::fields extra;
  extra.set("Docker-Content-Digest", digest);
  extra.set("Docker-Distribution-API-Version", "registry/2.0");
  requests_.with({std::string(req.method_string()), "manifest", "200"}).inc();
  co_return co_await http::send(stream, req, status::ok, std::move(body), media_type, extra);
}

awaitable<bool> mirror::relay_status(const http::request& req, const source::response& res,
                                     http::beast::tcp_stream& stream) {
  bhttp::fields extra;
  if (!res.www_authenticate.empty())
    extra.set(bhttp::field::www_authenticate, res.www_authenticate);
  extra.set("Docker-Distribution-API-Version", "registry/2.0");
  std::string ct = res.content_type.empty() ? "application/json" : res.content_type;
  co_return co_await http::send(stream, req, static_cast<status>(res.status), res.body, ct, extra);
}

awaitable<bool> mirror::handle_base(const http::request& req, route r,
                                    http::beast::tcp_stream& stream) {
  bhttp::fields extra;
  extra.set("Docker-Distribution-API-Version", "registry/2.0");
  if (r.registry.empty() || !origin_.scheme_for(r.registry)) {
    requests_.with({std::string(req.method_string()), "base", "200"}).inc();
    co_return co_await http::send(stream, req, status::ok, "{}", "application/json", extra);
  }
  // Ask the upstream, so a client that must authenticate gets the challenge
  // here, where registry clients expect it.
  auto res = co_await origin_.ping(r.target(req));
  if (res && res->status == 401) {
    requests_.with({std::string(req.method_string()), "base", "401"}).inc();
    co_return co_await relay_status(req, *res, stream);
  }
  requests_.with({std::string(req.method_string()), "base", "200"}).inc();
  co_return co_await http::send(stream, req, status::ok, "{}", "application/json", extra);
}

std::string mirror::auth_key(const http::request& req, const route& r,
                             const std::string& what) const {
  return sha256_hex(std::string(req[bhttp::field::authorization])) + "|" + r.registry + "|" +
         r.name + "|" + what;
}

awaitable<bool> mirror::handle_manifest(const http::request& req, route r,
                                        http::beast::tcp_stream& stream) {
  const std::string method(req.method_string());
  auto count = [&](status st) {
    requests_.with({method, "manifest", std::to_string(static_cast<unsigned>(st))}).inc();
  };
  const bool by_digest = r.ref.rfind("sha256:", 0) == 0 || r.ref.find(':') != std::string::npos;
  std::optional<digest> want;
  if (by_digest) {
    auto d = parse_digest(r.ref);
    if (!d)
      co_return co_await reply_error(req, stream, "manifest", status::bad_request, "DIGEST_INVALID",
                                     d.error().message);
    want = *d;
  } else if (!valid_tag(r.ref)) {
    co_return co_await reply_error(req, stream, "manifest", status::bad_request, "TAG_INVALID",
                                   "invalid tag '" + r.ref + "'");
  }
  std::string accept(req[bhttp::field::accept]);
  if (accept.empty()) accept = kDefaultManifestAccept;
  const bool head = req.method() == bhttp::verb::head;
  const auto target = r.target(req);

  if (want) {
    if (auto cached = store_.get_manifest(want->hex)) {
      // Cached by digest: serve it only to a client the upstream lets read it.
      auto key = auth_key(req, r, want->hex);
      auto it = auth_ok_.find(key);
      bool allowed = it != auth_ok_.end() && it->second.first > std::chrono::steady_clock::now();
      if (!allowed) {
        auto res = co_await origin_.manifest(target, r.ref, accept, true, 0);
        if (!res)
          co_return co_await reply_error(req, stream, "manifest", status::bad_gateway,
                                         "UPSTREAM_ERROR", res.error().message);
        if (res->status / 100 != 2) {
          count(static_cast<status>(res->status));
          co_return co_await relay_status(req, *res, stream);
        }
        auth_ok_[key] = {std::chrono::steady_clock::now() + opts_.auth_cache_ttl, {}};
      }
      co_return co_await reply_manifest(req, stream, cached->media_type, cached->body, want->str());
    }
  }

  auto res = co_await origin_.manifest(target, r.ref, accept, head, opts_.manifest_limit);
  if (!res) {
    if (res.error().is(errc::too_large))
      co_return co_await reply_error(req, stream, "manifest", status::payload_too_large,
                                     "MANIFEST_INVALID",
                                     "manifest " + r.name + ":" + r.ref + " from " + r.registry +
                                         " is larger than the mirror's " +
                                         std::to_string(opts_.manifest_limit >> 20) + " MiB limit");
    co_return co_await reply_error(req, stream, "manifest", status::bad_gateway, "UPSTREAM_ERROR",
                                   res.error().message);
  }
  if (res->status / 100 != 2) {
    count(static_cast<status>(res->status));
    co_return co_await relay_status(req, *res, stream);
  }
  if (head) {
    bhttp::response<bhttp::empty_body> out{status::ok, req.version()};
    out.set(bhttp::field::content_type, res->content_type);
    if (!res->docker_content_digest.empty())
      out.set("Docker-Content-Digest", res->docker_content_digest);
    if (res->content_length) out.content_length(*res->content_length);
    out.set("Docker-Distribution-API-Version", "registry/2.0");
    out.keep_alive(req.keep_alive());
    count(status::ok);
    bhttp::response_serializer<bhttp::empty_body> sr{out};
    stream.expires_after(std::chrono::seconds(30));
    auto [ec, n] =
        co_await bhttp::async_write_header(stream, sr, asio::as_tuple(asio::use_awaitable));
    co_return !ec;
  }
  std::string got = "sha256:" + sha256_hex(res->body);
  if (want && got != want->str()) {
    log()->error("manifest {} from {}/{}: body hashes to {}", want->str(), r.registry, r.name, got);
    co_return co_await reply_error(req, stream, "manifest", status::bad_gateway, "DIGEST_INVALID",
                                   "manifest from " + r.registry + "/" + r.name + " hashes to " +
                                       got + ", not the requested " + want->str());
  }
  auto d = parse_digest(got);
  if (auto put = store_.put_manifest(d->hex, {res->content_type, res->body}); !put)
    log()->warn("caching manifest {}: {}", got, put.error().describe());
  auth_ok_[auth_key(req, r, d->hex)] = {std::chrono::steady_clock::now() + opts_.auth_cache_ttl,
                                        {}};
  co_return co_await reply_manifest(req, stream, res->content_type, res->body, got);
}

awaitable<bool> mirror::handle_blob(const http::request& req, route r,
                                    http::beast::tcp_stream& stream) {
  const std::string method(req.method_string());
  auto count = [&](status st) {
    requests_.with({method, "blob", std::to_string(static_cast<unsigned>(st))}).inc();
  };
  auto d = parse_digest(r.ref);
  if (!d)
    co_return co_await reply_error(req, stream, "blob", status::bad_request, "DIGEST_INVALID",
                                   d.error().message);
  const auto target = r.target(req);

  // Every client proves to the upstream that it may read this blob (HEAD with
  // its own credentials), remembered briefly per credential and repository.
  upstream_check info;
  auto key = auth_key(req, r, d->hex);
  auto now = std::chrono::steady_clock::now();
  if (auto it = auth_ok_.find(key); it != auth_ok_.end() && it->second.first > now) {
    info = it->second.second;
  } else {
    auto res = co_await origin_.head_blob(target, d->str());
    if (!res)
      co_return co_await reply_error(req, stream, "blob", status::bad_gateway, "UPSTREAM_ERROR",
                                     res.error().message);
    if (res->status / 100 != 2) {
      count(static_cast<status>(res->status));
      co_return co_await relay_status(req, *res, stream);
    }
    if (!res->content_length)
      co_return co_await reply_error(
          req, stream, "blob", status::bad_gateway, "UPSTREAM_ERROR",
          "blob " + d->str() + " from " + r.registry + ": HEAD response has no Content-Length");
    info.content_length = *res->content_length;
    std::erase_if(auth_ok_, [&](const auto& kv) { return kv.second.first <= now; });
    auth_ok_[key] = {now + opts_.auth_cache_ttl, info};
  }
  const std::uint64_t size = info.content_length;

  byte_range range{0, size ? size - 1 : 0};
  auto rr = parse_range(req[bhttp::field::range], size, range);
  if (rr == range_result::unsatisfiable) {
    bhttp::fields extra;
    extra.set(bhttp::field::content_range, "bytes */" + std::to_string(size));
    count(status::range_not_satisfiable);
    co_return co_await http::send_oci_error(
        stream, req, status::range_not_satisfiable, "RANGE_INVALID",
        "range " + std::string(req[bhttp::field::range]) + " is outside blob of " +
            std::to_string(size) + " bytes",
        extra);
  }
  const bool partial = rr == range_result::ok;
  const std::uint64_t length = size == 0 ? 0 : range.last - range.first + 1;

  bhttp::response<bhttp::empty_body> out{partial ? status::partial_content : status::ok,
                                         req.version()};
  out.set(bhttp::field::content_type, "application/octet-stream");
  out.set("Docker-Content-Digest", d->str());
  out.set(bhttp::field::accept_ranges, "bytes");
  out.set(bhttp::field::etag, "\"" + d->str() + "\"");
  out.set("Docker-Distribution-API-Version", "registry/2.0");
  if (partial)
    out.set(bhttp::field::content_range, "bytes " + std::to_string(range.first) + "-" +
                                             std::to_string(range.last) + "/" +
                                             std::to_string(size));
  out.content_length(length);
  out.keep_alive(req.keep_alive());

  if (req.method() == bhttp::verb::head || length == 0) {
    count(out.result());
    co_return co_await write_header(stream, out);
  }

  bool hit = false;
  auto acquired = tasks_.acquire(*d, size, target, &hit);
  if (!acquired) {
    if (acquired.error().is(errc::no_space) || acquired.error().is(errc::io))
      storage_failures_.inc();
    auto st = acquired.error().is(errc::no_space)         ? status::service_unavailable
              : acquired.error().is(errc::upstream_error) ? status::bad_gateway
                                                          : status::internal_server_error;
    co_return co_await reply_error(req, stream, "blob", st, "UNAVAILABLE",
                                   acquired.error().message);
  }
  auto t = std::move(*acquired);
  (hit ? cache_hits_ : cache_misses_).inc();
  count(out.result());
  if (!co_await write_header(stream, out)) co_return false;

  std::uint64_t pos = range.first;
  const std::uint64_t end = range.last + 1;
  const auto tail = static_cast<std::uint32_t>((size - 1) / t->piece_length());
  while (pos < end) {
    // The response's last byte waits until the whole blob has verified (the
    // tail piece is readable only then), so no response, full or ranged, ever
    // completes with bytes that do not match the digest.
    auto n = pos + 1 == end ? tail : static_cast<std::uint32_t>(pos / t->piece_length());
    if (auto w = co_await t->wait_piece(n); !w) {
      // The blob failed (e.g. digest mismatch): abort the response so the
      // client can never mistake what it got for the complete blob.
      log()->error("blob {} to client: aborting response at byte {}: {}", d->str(), pos,
                   w.error().message);
      boost::system::error_code ec;
      stream.socket().close(ec);
      co_return false;
    }
    // Send every piece that is readable now in one go, straight from the page
    // cache (sendfile: no copy through user space).
    std::uint32_t last = n;
    while (piece_offset(last + 1, t->piece_length()) < end && t->readable(last + 1)) ++last;
    std::uint64_t upto =
        std::min<std::uint64_t>(end, piece_offset(last, t->piece_length()) + t->piece_length());
    if (upto == end && !t->readable(tail)) --upto;  // hold the final byte back
    auto sent = co_await send_file(stream.socket(), t->fd(), pos, upto - pos);
    client_bytes_.inc(static_cast<double>(sent.bytes));
    if (hit) cache_bytes_.inc(static_cast<double>(sent.bytes));
    pos += sent.bytes;
    if (sent.ec) {
      if (sent.ec != asio::error::broken_pipe && sent.ec != asio::error::connection_reset)
        log()->warn("blob {} to client: {} at byte {}", d->str(), sent.ec.message(), pos);
      co_return false;  // client went away; the download goes on for the cache
    }
  }
  co_return true;
}

}  // namespace shoal::mirror
