#pragma once
// Zero-copy blob bodies: sendfile(2) from a cache file to a client socket.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>

namespace shoal::mirror {

struct send_result {
  std::uint64_t bytes = 0;
  boost::system::error_code ec;
};

// Sends `length` bytes of `fd` from `offset`. Waits for the socket to be
// writable between calls; a client that accepts nothing for `idle` fails
// with timed_out.
boost::asio::awaitable<send_result> send_file(boost::asio::ip::tcp::socket& socket, int fd,
                                              std::uint64_t offset, std::uint64_t length,
                                              std::chrono::seconds idle = std::chrono::seconds(60));

}  // namespace shoal::mirror
