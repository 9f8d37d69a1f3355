#include "daemon/source/connection.h"

// GCC 12 reports -Wmismatched-new-delete on every Asio awaitable frame: a known
// false positive (the frame's class-specific operator new/delete do match).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <openssl/ssl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace shoal::source {
namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  (void)asio::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

std::string pool_key(const url_target& url) {
  return url.scheme + "://" + join_host_port(url.host, url.port);
}

connection::connection(beast::tcp_stream stream, std::string key)
    : plain_(std::move(stream)), key_(std::move(key)) {}

connection::connection(beast::ssl_stream<beast::tcp_stream> stream, std::string key)
    : tls_(std::move(stream)), key_(std::move(key)) {}

beast::tcp_stream& connection::tcp() { return tls_ ? tls_->next_layer() : *plain_; }

void connection::close() {
  beast::error_code ignored;
  tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  tcp().close();
}

asio::awaitable<result<std::unique_ptr<connection>>> connection::open(
    asio::any_io_executor ex, asio::ssl::context* tls, const upstream_policy* policy,
    url_target url, std::chrono::seconds connect_timeout, std::string what) {
  const std::string where = url.authority();
  asio::ip::tcp::resolver resolver(ex);
  auto [rec, endpoints] = co_await resolver.async_resolve(url.host, url.port, nothrow);
  if (rec) {
    co_return error(errc::network, what + ": cannot resolve " + url.host + ": " + rec.message() +
                                       " (check the registry name and this node's DNS)");
  }
  // The SSRF guard runs on what DNS returned, so a public name that points at
  // a private address is refused too.
  if (auto allowed = policy->check_resolved(url, endpoints); !allowed) {
    co_return error(errc::forbidden, what + ": " + allowed.error().message);
  }

  beast::tcp_stream stream(ex);
  stream.expires_after(connect_timeout);
  auto [cec, ep] = co_await stream.async_connect(endpoints, nothrow);
  if (cec) {
    co_return error(errc::network, what + ": cannot connect to " + where + ": " + cec.message() +
                                       " (is the registry up and reachable from this node?)");
  }
  (void)ep;
  stream.socket().set_option(asio::ip::tcp::no_delay(true));
  if (url.scheme != "https") {
    co_return std::make_unique<connection>(std::move(stream), pool_key(url));
  }

  beast::ssl_stream<beast::tcp_stream> ssl(std::move(stream), *tls);
  // SNI only for names (RFC 6066 forbids literal addresses).
  if (!is_ip_literal(url.host) &&
      !SSL_set_tlsext_host_name(ssl.native_handle(), url.host.c_str())) {
    co_return error(errc::network, what + ": cannot set TLS server name " + url.host);
  }
  ssl.set_verify_mode(asio::ssl::verify_peer);
  ssl.set_verify_callback(asio::ssl::host_name_verification(url.host));
  ssl.next_layer().expires_after(connect_timeout);
  auto [hec] = co_await ssl.async_handshake(asio::ssl::stream_base::client, nothrow);
  if (hec) {
    // An OpenSSL error (untrusted certificate, no common protocol) will not go
    // away on retry; a reset during the handshake might.
    const bool permanent = hec.category() == asio::error::get_ssl_category();
    co_return error(permanent ? errc::upstream_error : errc::network,
                    what + ": TLS handshake with " + where + " failed: " + hec.message() +
                        " (check the registry's certificate is trusted by this "
                        "node's system CA store)");
  }
  co_return std::make_unique<connection>(std::move(ssl), pool_key(url));
}

asio::awaitable<beast::error_code> connection::write(const http::request<http::empty_body>& req) {
  if (tls_) {
    auto [ec, n] = co_await http::async_write(*tls_, req, nothrow);
    co_return ec;
  }
  auto [ec, n] = co_await http::async_write(*plain_, req, nothrow);
  co_return ec;
}

asio::awaitable<beast::error_code> connection::write_raw(std::span<const char> data) {
  if (tls_) {
    auto [ec, n] = co_await asio::async_write(*tls_, asio::buffer(data.data(), data.size()), nothrow);
    co_return ec;
  }
  auto [ec, n] = co_await asio::async_write(*plain_, asio::buffer(data.data(), data.size()), nothrow);
  co_return ec;
}

asio::awaitable<beast::error_code> connection::read_header(
    http::response_parser<http::empty_body>& p) {
  if (tls_) {
    auto [ec, n] = co_await http::async_read_header(*tls_, buffer_, p, nothrow);
    co_return ec;
  }
  auto [ec, n] = co_await http::async_read_header(*plain_, buffer_, p, nothrow);
  co_return ec;
}

asio::awaitable<beast::error_code> connection::read(http::response_parser<http::string_body>& p) {
  if (tls_) {
    auto [ec, n] = co_await http::async_read(*tls_, buffer_, p, nothrow);
    co_return ec;
  }
  auto [ec, n] = co_await http::async_read(*plain_, buffer_, p, nothrow);
  co_return ec;
}

asio::awaitable<beast::error_code> connection::read_some(
    http::response_parser<http::buffer_body>& p) {
  beast::error_code ec;
  if (tls_) {
    std::tie(ec, std::ignore) = co_await http::async_read_some(*tls_, buffer_, p, nothrow);
  } else {
    std::tie(ec, std::ignore) = co_await http::async_read_some(*plain_, buffer_, p, nothrow);
  }
  if (ec == http::error::need_buffer) ec = {};
  co_return ec;
}

asio::awaitable<std::pair<beast::error_code, std::size_t>> connection::read_raw(
    std::span<char> out) {
  if (buffer_.size() > 0) {
    std::size_t n = asio::buffer_copy(asio::buffer(out.data(), out.size()), buffer_.data());
    buffer_.consume(n);
    co_return std::pair{beast::error_code{}, n};
  }
  if (tls_) {
    auto [ec, n] = co_await tls_->async_read_some(asio::buffer(out.data(), out.size()), nothrow);
    co_return std::pair{ec, n};
  }
  auto [ec, n] = co_await plain_->async_read_some(asio::buffer(out.data(), out.size()), nothrow);
  co_return std::pair{ec, n};
}

}  // namespace shoal::source
