#pragma once
// HTTP/1.1 server helpers on Beast: a listener that runs one linear coroutine
// per connection, request parsing with limits, and small response helpers.
//
// Threading: a server and all its connections run on the executor they were
// created with (the daemon runs one I/O thread; nothing here is shared).

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace shoal::http {

namespace beast = boost::beast;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using request = beast::http::request<beast::http::string_body>;
using status = beast::http::status;

struct limits {
  std::size_t header_bytes = 16 * 1024;  // larger request headers get 431
  std::size_t body_bytes = 64 * 1024;    // larger request bodies get 413
  std::chrono::seconds idle_timeout{120};
};

// "127.0.0.1:7400", "[::1]:7400", "0.0.0.0:7401", ":7400" -> endpoint.
result<tcp::endpoint> parse_endpoint(std::string_view text);

// Handles one parsed request; writes the whole response to the stream itself
// (so it can stream bodies). Returns false to close the connection.
using handler = std::function<asio::awaitable<bool>(request req, beast::tcp_stream& stream)>;

class server {
 public:
  server(asio::any_io_executor ex, std::string name, limits lim = {});
  // Binds and listens; errors name the address ("address in use: pick another --mirror-listen").
  result<void> listen(const tcp::endpoint& ep, const std::string& flag_name);
  tcp::endpoint local_endpoint() const;
  // Accepts until stop(); each connection runs `h` per request.
  void start(handler h);
  // Stops accepting and closes every open connection.
  void stop();

 private:
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> session(std::shared_ptr<beast::tcp_stream> stream);

  asio::any_io_executor ex_;
  std::string name_;
  limits limits_;
  tcp::acceptor acceptor_;
  handler handler_;
  std::list<std::weak_ptr<beast::tcp_stream>> open_;
  bool stopped_ = false;
};

// Writes a complete response with a string body. Returns false on write failure.
asio::awaitable<bool> send(beast::tcp_stream& stream, const request& req, status st,
                           std::string body, std::string_view content_type,
                           const beast::http::fields& extra = {});
// OCI distribution-style error: {"errors":[{"code":CODE,"message":MSG}]}.
asio::awaitable<bool> send_oci_error(beast::tcp_stream& stream, const request& req, status st,
                                     std::string_view code, std::string_view message,
                                     const beast::http::fields& extra = {});

}  // namespace shoal::http
