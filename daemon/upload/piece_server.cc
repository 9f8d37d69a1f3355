#include "daemon/upload/piece_server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/url/parse.hpp>
#include <charconv>

#include "common/digest.h"
#include "common/log.h"
#include "common/piece.h"
#include "daemon/mirror/send_file.h"
#include "daemon/transfer/piece_list.h"

namespace shoal::upload {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using asio::awaitable;
using http::status;

namespace {
auto log() { return logger("upload"); }

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}
}  // namespace

piece_server::piece_server(transfer::task_manager& tasks, metrics::registry& reg, options opts)
    : tasks_(tasks),
      opts_(opts),
      limit_(opts.rate_limit),
      bytes_(reg.add_counter("shoal_upload_bytes_total", "Piece bytes sent to other daemons")
                 .with()),
      slots_gauge_(reg.add_gauge("shoal_upload_slots_in_use", "Piece uploads in progress").with()),
      requests_(reg.add_counter("shoal_upload_requests_total",
                                "Requests to the piece server by kind and status code",
                                {"kind", "code"})),
      relays_(reg.add_counter("shoal_upload_relays_total",
                              "Piece uploads that began before this daemon held the whole piece "
                              "(relayed as it arrived)")
                  .with()) {}

std::uint64_t piece_server::recent_rate() {
  auto now = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(now - rate_mark_).count();
  if (secs >= 1.0) {
    last_rate_ = static_cast<std::uint64_t>((bytes_.value() - rate_mark_bytes_) / secs);
    rate_mark_bytes_ = bytes_.value();
    rate_mark_ = now;
  }
  return last_rate_;
}

awaitable<bool> piece_server::handle(http::request req, http::beast::tcp_stream& stream) {
  auto fail = [&](status st, std::string kind, std::string msg) -> awaitable<bool> {
    requests_.with({kind, std::to_string(static_cast<unsigned>(st))}).inc();
    co_return co_await http::send(stream, req, st, msg + "\n", "text/plain");
  };
  if (req.method() != bhttp::verb::get)
    co_return co_await fail(status::method_not_allowed, "other", "the piece server only serves GET");
  auto parsed = boost::urls::parse_origin_form(req.target());
  if (!parsed) co_return co_await fail(status::bad_request, "other", "malformed request target");
  std::string path = parsed->path();
  constexpr std::string_view prefix = "/v1/tasks/";
  if (path.rfind(prefix, 0) != 0)
    co_return co_await fail(status::not_found, "other",
                            "unknown path (GET /v1/tasks/{id}/pieces/{n} or /v1/tasks/{id}/bitmap)");
  std::string rest = path.substr(prefix.size());
  auto slash = rest.find('/');
  std::string id = rest.substr(0, slash);
  // Validated before any lookup: network input never reaches a path unchecked.
  if (slash == std::string::npos || !is_sha256_hex(id))
    co_return co_await fail(status::bad_request, "other", "task id must be 64 lowercase hex");
  std::string what = rest.substr(slash + 1);
  if (what.rfind("pieces/", 0) == 0) {
    std::uint64_t n = 0;
    if (!parse_u64(what.substr(7), n) || n > UINT32_MAX)
      co_return co_await fail(status::bad_request, "piece", "piece index must be a number");
    co_return co_await piece(req, id, static_cast<std::uint32_t>(n), stream);
  }
  if (what == "bitmap") {
    std::uint64_t after = 0;
    bool has_after = false;
    for (auto p : parsed->params()) {
      if (p.key != "after") continue;
      if (!parse_u64(p.value, after))
        co_return co_await fail(status::bad_request, "bitmap", "after must be a number");
      has_after = true;
    }
    co_return co_await bitmap(req, id, after, has_after, stream);
  }
  co_return co_await fail(status::not_found, "other", "unknown path " + path);
}

awaitable<bool> piece_server::piece(const http::request& req, std::string id, std::uint32_t n,
                                    http::beast::tcp_stream& stream) {
  auto count = [&](status st) {
    requests_.with({"piece", std::to_string(static_cast<unsigned>(st))}).inc();
  };
  auto t = tasks_.find(id);
  // Not readable yet but being received: relayed as it arrives.
  std::shared_ptr<transfer::partial_piece> partial;
  if (t && n < t->piece_count() && !t->readable(n)) partial = t->receiving(n);
  if (!t || n >= t->piece_count() || (!t->readable(n) && !partial)) {
    count(status::not_found);
    co_return co_await http::send(stream, req, status::not_found, "piece not held\n", "text/plain");
  }
  if (in_use_ >= opts_.slots) {
    count(status::service_unavailable);
    co_return co_await http::send(stream, req, status::service_unavailable,
                                  "all upload slots busy\n", "text/plain");
  }
  if (!t->claim_upload(n, std::chrono::steady_clock::now())) {
    count(status::conflict);
    co_return co_await http::send(stream, req, status::conflict,
                                  "piece just sent to another daemon (a source sends each piece "
                                  "once): fetch it from a peer\n",
                                  "text/plain");
  }
  ++in_use_;
  slots_gauge_.set(in_use_);
  struct release {
    piece_server* s;
    ~release() {
      --s->in_use_;
      s->slots_gauge_.set(s->in_use_);
    }
  } guard{this};
  const std::uint64_t off = piece_offset(n, t->piece_length());
  const std::uint64_t size = piece_size(n, t->content_length(), t->piece_length());
  bhttp::response<bhttp::empty_body> out{status::ok, req.version()};
  out.set(bhttp::field::content_type, "application/octet-stream");
  // A relay that cannot finish (its own download of the piece failed) closes
  // the connection short of Content-Length; the header tells the child that
  // this parent is not to blame for that.
  if (partial) out.set("X-Shoal-Relay", "1");
  out.content_length(size);
  out.keep_alive(req.keep_alive());
  bhttp::response_serializer<bhttp::empty_body> sr{out};
  stream.expires_after(std::chrono::seconds(60));
  auto [ec, w] = co_await bhttp::async_write_header(stream, sr, asio::as_tuple(asio::use_awaitable));
  if (ec) co_return false;
  count(status::ok);
  std::uint64_t sent = 0;
  const auto started = std::chrono::steady_clock::now();
  if (partial) {
    relays_.inc();
    if (!co_await relay(*t, n, *partial, stream)) co_return false;
    t->piece_delivered(n, std::chrono::steady_clock::now() - started);
    co_return true;
  }
  while (sent < size) {
    std::uint64_t len = size - sent;
    if (limit_.rate() > 0) {
      len = std::min<std::uint64_t>(len, opts_.chunk);
      co_await limit_.acquire(len);
    }
    auto r = co_await mirror::send_file(stream.socket(), t->fd(), off + sent, len);
    bytes_.inc(static_cast<double>(r.bytes));
    sent += r.bytes;
    if (r.ec) {
      log()->debug("piece {} of {} to {}: {}", n, id.substr(0, 12),
                   stream.socket().remote_endpoint(ec).address().to_string(), r.ec.message());
      co_return false;
    }
  }
  t->piece_delivered(n, std::chrono::steady_clock::now() - started);
  co_return true;
}

awaitable<bool> piece_server::relay(transfer::task& t, std::uint32_t n,
                                    transfer::partial_piece& p, http::beast::tcp_stream& stream) {
  const std::uint64_t off = piece_offset(n, t.piece_length());
  std::uint64_t sent = 0;
  while (sent < p.size()) {
    if (p.failed()) {
      log()->debug("piece {} of {}: its download failed; ending the relay at byte {}", n,
                   t.id().hex.substr(0, 12), sent);
      co_return false;
    }
    if (p.received() <= sent) {
      // Nothing new for this long: the download is stuck, let the child go.
      co_await p.wait_past(sent, std::chrono::steady_clock::now() + std::chrono::seconds(60));
      if (p.received() <= sent && !p.failed()) co_return false;
      continue;
    }
    std::uint64_t len = p.received() - sent;
    if (limit_.rate() > 0) {
      len = std::min<std::uint64_t>(len, opts_.chunk);
      co_await limit_.acquire(len);
    }
    std::uint64_t wrote = 0;
    boost::system::error_code ec;
    if (p.data()) {
      stream.expires_after(std::chrono::seconds(60));
      auto [wec, w] = co_await asio::async_write(
          stream, asio::buffer(p.data() + sent, static_cast<std::size_t>(len)),
          asio::as_tuple(asio::use_awaitable));
      wrote = w;
      ec = wec;
    } else {
      auto r = co_await mirror::send_file(stream.socket(), t.fd(), off + sent, len);
      wrote = r.bytes;
      ec = r.ec;
    }
    bytes_.inc(static_cast<double>(wrote));
    sent += wrote;
    if (ec) {
      log()->debug("piece {} of {} (relayed): {}", n, t.id().hex.substr(0, 12), ec.message());
      co_return false;
    }
  }
  co_return true;
}

awaitable<bool> piece_server::bitmap(const http::request& req, std::string id,
                                     std::uint64_t after, bool has_after,
                                     http::beast::tcp_stream& stream) {
  auto t = tasks_.find(id);
  if (!t) {
    requests_.with({"bitmap", "404"}).inc();
    co_return co_await http::send(stream, req, status::not_found, "task not held\n", "text/plain");
  }
  // Long-poll: answer once the version moved past `after` (or went back: the
  // task started over), the task ended, or the wait is over.
  auto deadline = std::chrono::steady_clock::now() + opts_.bitmap_wait;
  while (has_after && t->version() == after && t->current() != transfer::task::state::failed &&
         std::chrono::steady_clock::now() < deadline) {
    co_await t->wait_change(deadline);
  }
  if (t->current() == transfer::task::state::failed) {
    requests_.with({"bitmap", "404"}).inc();
    co_return co_await http::send(stream, req, status::not_found, "task failed\n", "text/plain");
  }
  bhttp::fields extra;
  extra.set("X-Shoal-Bitmap-Version", std::to_string(t->version()));
  // Piece uploads in progress: children ask the less busy of a piece's holders
  // (transfer::parent_upload_load).
  extra.set("X-Shoal-Uploads", std::to_string(in_use_));
  // Pieces being received now: a child may ask for them, relayed as they
  // arrive (transfer::partial_piece).
  if (auto recv = t->receiving_pieces(); !recv.empty())
    extra.set("X-Shoal-Receiving", transfer::format_piece_list(recv));
  requests_.with({"bitmap", "200"}).inc();
  co_return co_await http::send(stream, req, status::ok, t->bitmap(), "application/octet-stream",
                                extra);
}

}  // namespace shoal::upload
