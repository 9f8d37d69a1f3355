#pragma once
// A piece this daemon is receiving: from origin (as the swarm's source, the
// bytes go to the content file as they arrive) or from a parent (the bytes go
// to one buffer of the piece's size, hashed and written once whole). The
// piece server relays the bytes received so far to other daemons before the
// piece is whole (cut-through, DESIGN §4): a piece is passed on while it
// arrives, not one whole piece time per hop later. The daemon that receives
// a relayed piece verifies it against the scheduler's digest like any other.
//
// Threading: the daemon's I/O executor only (no locks). Readers of the
// buffer on the blocking pool (the hash) run once the piece is whole, and
// nothing writes to it after that.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace shoal::transfer {

class partial_piece {
 public:
  enum class where { memory, file };
  // `memory`: an uninitialised buffer of `size` bytes that the receiver fills
  // in order (buffer()); `file`: the bytes are written to the content file.
  partial_piece(boost::asio::any_io_executor ex, std::uint64_t size, where w);
  partial_piece(const partial_piece&) = delete;
  partial_piece& operator=(const partial_piece&) = delete;

  std::uint64_t size() const { return size_; }
  // Bytes [0, received()) are in place (in the buffer or the file).
  std::uint64_t received() const { return received_; }
  bool whole() const { return received_ == size_; }
  // The receive ended without the whole piece: relays must end too.
  bool failed() const { return failed_; }
  // The buffer (memory pieces), nullptr for file pieces.
  char* data() { return data_.get(); }
  const char* data() const { return data_.get(); }
  std::span<const char> bytes() const { return {data_.get(), static_cast<std::size_t>(size_)}; }

  // The receiver: `n` more bytes are in place. Wakes relays.
  void advance(std::uint64_t n);
  // The receiver gave up (upstream failed, task ended). Wakes relays.
  void fail();
  // A relay: waits until more than `have` bytes are in place, the piece
  // failed, or the deadline.
  boost::asio::awaitable<void> wait_past(std::uint64_t have,
                                         std::chrono::steady_clock::time_point deadline);

 private:
  void wake();

  boost::asio::any_io_executor ex_;
  std::uint64_t size_;
  std::unique_ptr<char[]> data_;
  std::uint64_t received_ = 0;
  bool failed_ = false;
  std::vector<boost::asio::steady_timer*> waiters_;
};

}  // namespace shoal::transfer
