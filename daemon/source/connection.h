#pragma once
// Private to daemon/source: one HTTP/1.1 connection to an upstream, plain or TLS.
//
// open() resolves the host, applies the SSRF policy to every resolved address,
// connects with a timeout and, for https, verifies the peer (system trust
// store, host name check, SNI). The caller sets per-operation timeouts with
// tcp().expires_after(); every operation reports errors as values.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "common/result.h"
#include "daemon/source/upstream_policy.h"

namespace shoal::source {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

class connection {
 public:
  // Connects to url's host and port. `what` names the operation for messages
  // ("manifest latest from registry.example.com/library/ubuntu").
  static asio::awaitable<result<std::unique_ptr<connection>>> open(
      asio::any_io_executor ex, asio::ssl::context* tls, const upstream_policy* policy,
      url_target url, std::chrono::seconds connect_timeout, std::string what);

  explicit connection(beast::tcp_stream stream, std::string key);
  connection(beast::ssl_stream<beast::tcp_stream> stream, std::string key);

  // The TCP layer, for timeouts.
  beast::tcp_stream& tcp();
  // "scheme://host:port": connections are pooled and reused per key.
  const std::string& key() const { return key_; }
  // Closes the socket; pending operations complete with an error.
  void close();

  asio::awaitable<beast::error_code> write(const http::request<http::empty_body>& req);
  // Writes body bytes after a header sent with write() (uploads).
  asio::awaitable<beast::error_code> write_raw(std::span<const char> data);
  asio::awaitable<beast::error_code> read_header(http::response_parser<http::empty_body>& p);
  asio::awaitable<beast::error_code> read(http::response_parser<http::string_body>& p);
  // Reads at most what fits in p's body buffer; need_buffer is not an error.
  asio::awaitable<beast::error_code> read_some(http::response_parser<http::buffer_body>& p);

  // Reads body bytes straight into `out` (bytes already buffered after the
  // header first, then the socket): for bodies with a Content-Length, this
  // avoids Beast's 64 KiB-per-read parser path on multi-GiB blobs.
  asio::awaitable<std::pair<beast::error_code, std::size_t>> read_raw(std::span<char> out);
  // When this connection last went idle (for the pool).
  std::chrono::steady_clock::time_point idle_since;

 private:
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
  std::string key_;
};

// "scheme://host:port" for the pool.
std::string pool_key(const url_target& url);

}  // namespace shoal::source
