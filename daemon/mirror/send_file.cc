#include "daemon/mirror/send_file.h"

#include <sys/sendfile.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>

namespace shoal::mirror {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

asio::awaitable<send_result> send_file(asio::ip::tcp::socket& socket, int fd, std::uint64_t offset,
                                       std::uint64_t length, std::chrono::seconds idle) {
  send_result res;
  boost::system::error_code ec;
  socket.native_non_blocking(true, ec);
  if (ec) co_return send_result{0, ec};
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (res.bytes < length) {
    off_t off = static_cast<off_t>(offset + res.bytes);
    // Bounded per call so one client cannot hog the I/O thread.
    std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(length - res.bytes, 4 << 20));
    ssize_t n = ::sendfile(socket.native_handle(), fd, &off, want);
    if (n > 0) {
      res.bytes += static_cast<std::uint64_t>(n);
      continue;
    }
    if (n == 0) {  // the file is shorter than the cache says
      res.ec = asio::error::eof;
      co_return res;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      res.ec = boost::system::error_code(errno, boost::system::system_category());
      co_return res;
    }
    timer.expires_after(idle);
    auto which = co_await (
        socket.async_wait(asio::socket_base::wait_write, asio::as_tuple(asio::use_awaitable)) ||
        timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (which.index() == 1) {
      res.ec = asio::error::timed_out;
      co_return res;
    }
    if (auto [wec] = std::get<0>(which); wec) {
      res.ec = wec;
      co_return res;
    }
  }
  co_return res;
}

}  // namespace shoal::mirror
