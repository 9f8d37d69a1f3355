#include "daemon/transfer/partial_piece.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace shoal::transfer {

namespace asio = boost::asio;

partial_piece::partial_piece(asio::any_io_executor ex, std::uint64_t size, where w)
    : ex_(std::move(ex)), size_(size) {
  if (w == where::memory) data_ = std::make_unique_for_overwrite<char[]>(size);
}

void partial_piece::advance(std::uint64_t n) {
  received_ = std::min(size_, received_ + n);
  wake();
}

void partial_piece::fail() {
  if (whole()) return;  // every byte is there: relays can still finish
  failed_ = true;
  wake();
}

void partial_piece::wake() {
  for (auto* w : waiters_) w->cancel();
}

asio::awaitable<void> partial_piece::wait_past(std::uint64_t have,
                                               std::chrono::steady_clock::time_point deadline) {
  if (received_ > have || failed_ || whole()) co_return;
  asio::steady_timer timer(ex_, deadline);
  waiters_.push_back(&timer);
  auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  (void)ec;  // cancelled = progress or failure; expired = the deadline
  std::erase(waiters_, &timer);
}

}  // namespace shoal::transfer
