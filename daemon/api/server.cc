#include "daemon/api/server.h"

#include <sys/stat.h>
#include <sys/un.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/json.hpp>
#include <filesystem>
#include <sstream>

#include "common/log.h"

namespace shoal::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace fs = std::filesystem;
using asio::awaitable;
using local = asio::local::stream_protocol;
using unix_stream = beast::basic_stream<local>;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {
auto log() { return logger("api"); }

template <class Stream>
class stream_connection final : public connection {
 public:
  stream_connection(Stream& s, const char* transport) : s_(s), transport_(transport) {}

  awaitable<bool> send(const request& req, status st, std::string body,
                       std::string_view content_type) override {
    bhttp::response<bhttp::string_body> res{st, req.version() ? req.version() : 11};
    res.set(bhttp::field::server, "shoald");
    if (!content_type.empty()) res.set(bhttp::field::content_type, content_type);
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    s_.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await bhttp::async_write(s_, res, tuple_awaitable);
    co_return !ec;
  }

  awaitable<bool> begin_stream(const request& req, status st,
                               std::string_view content_type) override {
    bhttp::response<bhttp::empty_body> res{st, req.version() ? req.version() : 11};
    res.set(bhttp::field::server, "shoald");
    res.set(bhttp::field::content_type, content_type);
    res.set(bhttp::field::cache_control, "no-store");
    res.keep_alive(req.keep_alive());
    res.chunked(true);
    bhttp::response_serializer<bhttp::empty_body> sr{res};
    s_.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await bhttp::async_write_header(s_, sr, tuple_awaitable);
    co_return !ec;
  }

  awaitable<bool> write_chunk(std::string data) override {
    if (data.empty()) co_return true;
    s_.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await asio::async_write(s_, bhttp::make_chunk(asio::buffer(data)),
                                              tuple_awaitable);
    co_return !ec;
  }

  awaitable<bool> end_stream() override {
    s_.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await asio::async_write(s_, bhttp::make_chunk_last(), tuple_awaitable);
    co_return !ec;
  }

  const char* transport() const override { return transport_; }

 private:
  Stream& s_;
  const char* transport_;
};

// Whether something accepts connections on the unix socket at `path`.
bool socket_alive(const std::string& path) {
  asio::io_context io;
  local::socket s(io);
  boost::system::error_code ec;
  s.connect(local::endpoint(path), ec);
  return !ec;
}
}  // namespace

server::server(asio::any_io_executor ex, const router& r, server_limits lim)
    : ex_(ex), router_(r), limits_(lim) {}

server::~server() { stop(); }

result<void> server::listen_unix(const std::string& path) {
  auto fail = [&](const std::string& why) {
    return error(errc::invalid_argument, "api: cannot listen on unix socket " + path + ": " + why);
  };
  if (path.empty()) return fail("empty path");
  if (path.size() >= sizeof(sockaddr_un{}.sun_path))
    return fail("path longer than " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                " bytes (pick a shorter --api-socket)");
  fs::path p(path);
  std::error_code fec;
  if (p.has_parent_path() && !fs::exists(p.parent_path(), fec)) {
    fs::create_directories(p.parent_path(), fec);
    if (fec) return fail("cannot create its directory: " + fec.message());
    ::chmod(p.parent_path().c_str(), 0755);
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return fail("a file that is not a socket is in the way (remove it or pick another --api-socket)");
    if (socket_alive(path))
      return fail("another process (another shoald?) is serving it (stop it or pick another "
                  "--api-socket)");
    ::unlink(path.c_str());  // stale: left by a daemon that died
  }
  unix_ = std::make_unique<local::acceptor>(ex_);
  boost::system::error_code ec;
  unix_->open(local(), ec);
  if (!ec) unix_->bind(local::endpoint(path), ec);
  if (!ec) unix_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec.message() + " (pick another --api-socket)");
  ::chmod(path.c_str(), 0660);
  socket_path_ = path;
  return ok();
}

result<void> server::listen_tcp(const asio::ip::tcp::endpoint& ep) {
  tcp_ = std::make_unique<asio::ip::tcp::acceptor>(ex_);
  boost::system::error_code ec;
  tcp_->open(ep.protocol(), ec);
  if (!ec) tcp_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) tcp_->bind(ep, ec);
  if (!ec) tcp_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::ostringstream a;
    a << ep;
    return error(errc::invalid_argument, "api: cannot listen on " + a.str() + ": " +
                                             ec.message() + " (pick another --api-listen)");
  }
  return ok();
}

asio::ip::tcp::endpoint server::tcp_endpoint() const {
  boost::system::error_code ec;
  return tcp_ ? tcp_->local_endpoint(ec) : asio::ip::tcp::endpoint{};
}

void server::start() {
  if (unix_) asio::co_spawn(ex_, accept_unix(), asio::detached);
  if (tcp_) asio::co_spawn(ex_, accept_tcp(), asio::detached);
}

void server::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ec;
  if (unix_) unix_->close(ec);
  if (tcp_) tcp_->close(ec);
  auto closers = std::move(closers_);
  closers_.clear();
  for (auto& c : closers) c();
  if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
}

awaitable<void> server::accept_unix() {
  while (!stopped_) {
    auto [ec, sock] = co_await unix_->async_accept(tuple_awaitable);
    if (ec) {
      if (stopped_ || ec == asio::error::operation_aborted) break;
      log()->warn("unix socket accept failed: {}", ec.message());
      continue;
    }
    if (open_ >= limits_.connections) {
      log()->warn("api: {} connections open, refusing another", open_);
      continue;  // sock closes here
    }
    auto s = std::make_shared<unix_stream>(std::move(sock));
    asio::co_spawn(ex_, session(s), asio::detached);
  }
}

awaitable<void> server::accept_tcp() {
  while (!stopped_) {
    auto [ec, sock] = co_await tcp_->async_accept(tuple_awaitable);
    if (ec) {
      if (stopped_ || ec == asio::error::operation_aborted) break;
      log()->warn("api tcp accept failed: {}", ec.message());
      continue;
    }
    if (open_ >= limits_.connections) continue;
    sock.set_option(asio::ip::tcp::no_delay(true), ec);
    auto s = std::make_shared<beast::tcp_stream>(std::move(sock));
    asio::co_spawn(ex_, session(s), asio::detached);
  }
}

template <class Stream>
awaitable<void> server::session(std::shared_ptr<Stream> s) {
  ++open_;
  std::weak_ptr<Stream> weak = s;
  auto closer = closers_.insert(closers_.end(), [weak] {
    if (auto p = weak.lock()) {
      boost::system::error_code ec;
      p->socket().close(ec);
    }
  });
  stream_connection<Stream> conn(*s, std::is_same_v<Stream, unix_stream> ? "unix" : "tcp");
  beast::flat_buffer buffer;
  for (;;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits_.header_bytes));
    parser.body_limit(limits_.body_bytes);
    s->expires_after(limits_.idle_timeout);
    auto [ec, n] = co_await bhttp::async_read(*s, buffer, parser, tuple_awaitable);
    if (ec) {
      if (ec == bhttp::error::header_limit || ec == bhttp::error::body_limit) {
        bool header = ec == bhttp::error::header_limit;
        request req;
        req.version(11);
        req.keep_alive(false);
        route_context ctx;
        ctx.req = &req;
        ctx.conn = &conn;
        const status st =
            header ? status::request_header_fields_too_large : status::payload_too_large;
        std::string msg = header ? "request headers exceed " +
                                       std::to_string(limits_.header_bytes) + " bytes"
                                 : "request body exceeds " +
                                       std::to_string(limits_.body_bytes) + " bytes";
        co_await reply_error(ctx, st, "too_large", std::move(msg));
      } else if (ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
                 ec != asio::error::operation_aborted && ec != beast::error::timeout &&
                 ec != asio::error::connection_reset && ec != asio::error::bad_descriptor) {
        request req;
        req.version(11);
        req.keep_alive(false);
        route_context ctx;
        ctx.req = &req;
        ctx.conn = &conn;
        co_await reply_error(ctx, status::bad_request, "bad_request",
                             "malformed HTTP request: " + ec.message());
      }
      break;
    }
    request req = parser.release();
    bool keep = req.keep_alive();
    bool go_on = co_await router_.dispatch(std::move(req), conn);
    if (!go_on || !keep || stopped_) break;
  }
  boost::system::error_code ec;
  s->socket().shutdown(asio::socket_base::shutdown_send, ec);
  s->socket().close(ec);
  if (!stopped_) closers_.erase(closer);
  --open_;
}

}  // namespace shoal::api
