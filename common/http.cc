#include "common/http.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <sstream>

#include "common/log.h"

namespace shoal::http {

namespace bhttp = beast::http;
using asio::use_awaitable;
constexpr auto tuple_awaitable = asio::as_tuple(use_awaitable);

result<tcp::endpoint> parse_endpoint(std::string_view text) {
  auto bad = [&](std::string why) {
    return error(errc::invalid_argument,
                 "listen address '" + std::string(text) + "': " + why + " (use HOST:PORT)");
  };
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad("no port");
  std::string_view host = text.substr(0, colon);
  std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port > 65535)
    return bad("bad port");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  boost::system::error_code aec;
  auto addr = asio::ip::make_address(std::string(host), aec);
  if (aec) return bad("host must be an IP address");
  return tcp::endpoint(addr, static_cast<unsigned short>(port));
}

server::server(asio::any_io_executor ex, std::string name, limits lim)
    : ex_(ex), name_(std::move(name)), limits_(lim), acceptor_(ex) {}

result<void> server::listen(const tcp::endpoint& ep, const std::string& flag_name) {
  boost::system::error_code ec;
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::ostringstream addr;
    addr << ep;
    return error(errc::invalid_argument, name_ + ": cannot listen on " + addr.str() + ": " +
                                             ec.message() + " (pick another " + flag_name + ")");
  }
  return ok();
}

tcp::endpoint server::local_endpoint() const {
  boost::system::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void server::start(handler h) {
  handler_ = std::move(h);
  asio::co_spawn(ex_, accept_loop(), asio::detached);
}

void server::stop() {
  stopped_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (auto& w : open_)
    if (auto s = w.lock()) s->socket().close(ec);
  open_.clear();
}

asio::awaitable<void> server::accept_loop() {
  while (!stopped_) {
    auto [ec, sock] = co_await acceptor_.async_accept(tuple_awaitable);
    if (ec) {
      if (stopped_ || ec == asio::error::operation_aborted) break;
      logger("http")->warn("{}: accept failed: {}", name_, ec.message());
      continue;
    }
    sock.set_option(tcp::no_delay(true), ec);
    auto stream = std::make_shared<beast::tcp_stream>(std::move(sock));
    // Forget closed connections so the list stays small.
    open_.remove_if([](const std::weak_ptr<beast::tcp_stream>& w) { return w.expired(); });
    open_.push_back(stream);
    asio::co_spawn(ex_, session(stream), asio::detached);
  }
}

asio::awaitable<void> server::session(std::shared_ptr<beast::tcp_stream> stream) {
  beast::flat_buffer buffer;
  for (;;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits_.header_bytes));
    parser.body_limit(limits_.body_bytes);
    stream->expires_after(limits_.idle_timeout);
    auto [ec, n] = co_await bhttp::async_read(*stream, buffer, parser, tuple_awaitable);
    if (ec) {
      if (ec == bhttp::error::header_limit || ec == bhttp::error::body_limit) {
        bool header = ec == bhttp::error::header_limit;
        request req;
        req.version(11);
        co_await send_oci_error(
            *stream, req,
            header ? status::request_header_fields_too_large : status::payload_too_large,
            header ? "HEADERS_TOO_LARGE" : "BODY_TOO_LARGE",
            header ? "request headers exceed the server's limit"
                   : "request body exceeds the server's limit");
      } else if (ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
                 ec != asio::error::operation_aborted && ec != beast::error::timeout &&
                 ec != asio::error::connection_reset) {
        request req;
        req.version(11);
        co_await send_oci_error(*stream, req, status::bad_request, "BAD_REQUEST",
                                "malformed HTTP request: " + ec.message());
      }
      break;
    }
    request req = parser.release();
    bool keep = req.keep_alive();
    bool ok_to_continue = co_await handler_(std::move(req), *stream);
    if (!ok_to_continue || !keep || stopped_) break;
  }
  boost::system::error_code ec;
  stream->socket().shutdown(tcp::socket::shutdown_send, ec);
  stream->socket().close(ec);
}

asio::awaitable<bool> send(beast::tcp_stream& stream, const request& req, status st,
                           std::string body, std::string_view content_type,
                           const bhttp::fields& extra) {
  bhttp::response<bhttp::string_body> res{st, req.version() ? req.version() : 11};
  for (const auto& f : extra) res.set(f.name_string(), f.value());
  if (!content_type.empty()) res.set(bhttp::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  bool head = req.method() == bhttp::verb::head;
  res.content_length(body.size());
  if (!head) res.body() = std::move(body);
  stream.expires_after(std::chrono::seconds(30));
  if (head) {
    bhttp::response_serializer<bhttp::string_body> sr{res};
    auto [ec, n] = co_await bhttp::async_write_header(stream, sr, tuple_awaitable);
    co_return !ec;
  }
  auto [ec, n] = co_await bhttp::async_write(stream, res, tuple_awaitable);
  co_return !ec;
}

asio::awaitable<bool> send_oci_error(beast::tcp_stream& stream, const request& req, status st,
                                     std::string_view code, std::string_view message,
                                     const bhttp::fields& extra) {
  boost::json::object e{{"code", code}, {"message", message}};
  boost::json::object body{{"errors", boost::json::array{e}}};
  co_return co_await send(stream, req, st, boost::json::serialize(body), "application/json", extra);
}

}  // namespace shoal::http
