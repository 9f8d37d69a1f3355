#pragma once
// A loopback HTTP/1.1 server for the origin client's tests: binds 127.0.0.1:0,
// records every request and answers from a handler. A reply can cut the
// connection part-way through its body, omit Content-Length (body until EOF)
// or use chunked encoding, so the client's failure paths can be driven.
// Runs on the test's io_context, on the same thread as the client.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace shoal::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct seen_request {
  std::string method;
  std::string target;
  std::string host;
  std::string authorization;
  std::string accept;
  std::string range;
  std::string user_agent;
  int connection = 0;  // which accepted connection carried it (1-based)
};

struct reply {
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::optional<std::size_t> cut_after;  // send this many body bytes, then close
  bool no_length = false;                // no Content-Length: body ends at EOF
  bool chunked = false;                  // Transfer-Encoding: chunked, 1000-byte chunks
  bool close_after = false;              // close after the reply without saying so
};

class fake_server {
 public:
  using handler = std::function<reply(const seen_request&)>;

  fake_server(asio::io_context& ioc, handler h) : st_(std::make_shared<state>(ioc)) {
    st_->handle = std::move(h);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    st_->acceptor.open(ep.protocol());
    st_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    st_->acceptor.bind(ep);
    st_->acceptor.listen();
    port_ = st_->acceptor.local_endpoint().port();
    asio::co_spawn(ioc, accept_loop(st_), asio::detached);
  }
  ~fake_server() {
    boost::system::error_code ignored;
    st_->acceptor.close(ignored);
  }
  fake_server(const fake_server&) = delete;
  fake_server& operator=(const fake_server&) = delete;

  unsigned short port() const { return port_; }
  std::string registry() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::vector<seen_request>& requests() const { return st_->seen; }
  int connections() const { return st_->connections; }

 private:
  struct state {
    explicit state(asio::io_context& ioc) : acceptor(ioc) {}
    tcp::acceptor acceptor;
    handler handle;
    std::vector<seen_request> seen;
    int connections = 0;
  };

  static asio::awaitable<void> accept_loop(std::shared_ptr<state> st) {
    for (;;) {
      auto [ec, sock] = co_await st->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      const int id = ++st->connections;
      asio::co_spawn(st->acceptor.get_executor(), session(st, std::move(sock), id), asio::detached);
    }
  }

  static std::string head_of(const reply& r, std::size_t content_length) {
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " +
                      std::string(http::obsolete_reason(http::int_to_status(r.status))) + "\r\n";
    bool has_length = false;
    for (const auto& [k, v] : r.headers) {
      out += k + ": " + v + "\r\n";
      if (beast::iequals(k, "Content-Length")) has_length = true;
    }
    if (r.chunked) {
      out += "Transfer-Encoding: chunked\r\n";
    } else if (!has_length && !r.no_length) {
      out += "Content-Length: " + std::to_string(content_length) + "\r\n";
    }
    return out + "\r\n";
  }

  static std::string chunk_encode(const std::string& body) {
    std::string out;
    for (std::size_t i = 0; i < body.size(); i += 1000) {
      const auto part = body.substr(i, 1000);
      char len[32];
      std::snprintf(len, sizeof len, "%zx\r\n", part.size());
      out += len + part + "\r\n";
    }
    return out + "0\r\n\r\n";
  }

  static asio::awaitable<void> session(std::shared_ptr<state> st, tcp::socket sock, int id) {
    beast::flat_buffer buf;
    for (;;) {
      http::request<http::string_body> req;
      auto [ec, n] = co_await http::async_read(sock, buf, req, asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      seen_request s;
      s.method = std::string(req.method_string());
      s.target = std::string(req.target());
      s.host = std::string(req[http::field::host]);
      s.authorization = std::string(req[http::field::authorization]);
      s.accept = std::string(req[http::field::accept]);
      s.range = std::string(req[http::field::range]);
      s.user_agent = std::string(req[http::field::user_agent]);
      s.connection = id;
      st->seen.push_back(s);
      const reply r = st->handle(s);
      const bool is_head = req.method() == http::verb::head;
      std::string body = is_head ? std::string() : (r.chunked ? chunk_encode(r.body) : r.body);
      if (r.cut_after) body = body.substr(0, *r.cut_after);
      const std::string wire = head_of(r, r.body.size()) + body;
      auto [wec, wn] =
          co_await asio::async_write(sock, asio::buffer(wire), asio::as_tuple(asio::use_awaitable));
      if (wec || r.cut_after || r.no_length || r.close_after || !req.keep_alive()) {
        boost::system::error_code ignored;
        sock.shutdown(tcp::socket::shutdown_both, ignored);
        sock.close(ignored);
        co_return;
      }
    }
  }

  std::shared_ptr<state> st_;
  unsigned short port_ = 0;
};

// Serves `blob` honouring `Range: bytes=a-b` / `bytes=a-` with 206.
inline reply serve_range(const std::string& blob, const std::string& range) {
  reply r;
  if (range.empty()) {
    r.body = blob;
    return r;
  }
  const auto eq = range.find('=');
  const auto dash = range.find('-');
  const std::uint64_t first = std::stoull(range.substr(eq + 1, dash - eq - 1));
  std::uint64_t last = blob.size() - 1;
  if (dash + 1 < range.size())
    last = std::min<std::uint64_t>(last, std::stoull(range.substr(dash + 1)));
  r.status = 206;
  r.body = blob.substr(first, last - first + 1);
  r.headers.emplace_back("Content-Range", "bytes " + std::to_string(first) + "-" +
                                              std::to_string(last) + "/" +
                                              std::to_string(blob.size()));
  return r;
}

template <class T>
asio::awaitable<void> capture_into(asio::awaitable<T> aw, std::optional<T>* out) {
  out->emplace(co_await std::move(aw));
}

// Runs one awaitable to completion on ioc (with a 10 s guard against hangs).
template <class T>
T run(asio::io_context& ioc, asio::awaitable<T> aw) {
  std::optional<T> out;
  std::exception_ptr err;
  bool done = false;
  asio::co_spawn(ioc, capture_into(std::move(aw), &out), [&](std::exception_ptr e) {
    err = e;
    done = true;
    ioc.stop();
  });
  asio::steady_timer guard(ioc);
  guard.expires_after(std::chrono::seconds(10));
  guard.async_wait([&](boost::system::error_code ec) {
    if (!ec) ioc.stop();
  });
  ioc.restart();
  ioc.run();
  guard.cancel();
  if (err) std::rethrow_exception(err);
  if (!done) throw std::runtime_error("test operation did not finish within 10 s");
  return std::move(*out);
}

}  // namespace shoal::test
