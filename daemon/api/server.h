#pragma once
// The local API's listeners: HTTP/1.1 over a unix stream socket
// (`--api-socket`, the default) and optionally over TCP (`--api-listen`).
// One linear coroutine per connection; requests are parsed with limits and
// handed to the router.
//
// The socket's directory is created (0755) if missing and the socket is made
// 0660; a stale socket file (nothing answers on it) is replaced, while a live
// one (another shoald) is an error.
//
// Threading: the daemon's I/O executor.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <string>

#include "common/result.h"
#include "daemon/api/router.h"

namespace shoal::api {

struct server_limits {
  std::size_t header_bytes = 16 * 1024;  // larger headers get 431
  std::size_t body_bytes = 64 * 1024;    // larger bodies get 413
  std::size_t connections = 128;         // more are closed at once
  std::chrono::seconds idle_timeout{120};
};

class server {
 public:
  server(boost::asio::any_io_executor ex, const router& r, server_limits lim = {});
  ~server();
  // Binds the unix socket at `path` (see above for stale/live sockets).
  result<void> listen_unix(const std::string& path);
  // Binds a TCP listener (`--api-listen`).
  result<void> listen_tcp(const boost::asio::ip::tcp::endpoint& ep);
  boost::asio::ip::tcp::endpoint tcp_endpoint() const;
  void start();
  // Stops accepting, closes every connection, removes the socket file.
  void stop();

 private:
  boost::asio::awaitable<void> accept_unix();
  boost::asio::awaitable<void> accept_tcp();
  template <class Stream>
  boost::asio::awaitable<void> session(std::shared_ptr<Stream> s);

  boost::asio::any_io_executor ex_;
  const router& router_;
  server_limits limits_;
  std::string socket_path_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> unix_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> tcp_;
  std::list<std::function<void()>> closers_;  // close each open connection
  std::size_t open_ = 0;
  bool stopped_ = false;
};

}  // namespace shoal::api
