// Relaying pieces as they arrive (partial_piece.h): a piece being received
// tells waiting relays about every new byte and about a receive that failed;
// the task lists the pieces being received for the bitmap's
// X-Shoal-Receiving header and moves its bitmap version with them; the
// header's parser refuses what a parent must not send.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "daemon/transfer/partial_piece.h"
#include "daemon/transfer/piece_list.h"
#include "test/support/task_fixture.h"

namespace {

using namespace shoal;
using transfer::partial_piece;
using clock_type = std::chrono::steady_clock;

// A relay's view: waits past `have` once, then records what it saw.
struct watcher {
  std::uint64_t saw = 0;
  bool failed = false;
  bool woke = false;
};

boost::asio::awaitable<void> watch(std::shared_ptr<partial_piece> p, std::uint64_t have,
                                   clock_type::time_point deadline, watcher* w) {
  co_await p->wait_past(have, deadline);
  w->saw = p->received();
  w->failed = p->failed();
  w->woke = true;
}

// Runs what is ready (an io_context that ran out of work must be restarted).
void run_ready(boost::asio::io_context& io) {
  io.restart();
  io.poll();
}

}  // namespace

TEST_CASE("a relay wakes for each new byte of a piece being received") {
  boost::asio::io_context io;
  auto p = std::make_shared<partial_piece>(io.get_executor(), 10, partial_piece::where::memory);
  REQUIRE(p->data() != nullptr);
  CHECK(p->received() == 0);
  CHECK_FALSE(p->whole());
  watcher w;
  boost::asio::co_spawn(io, watch(p, 0, clock_type::now() + std::chrono::hours(1), &w),
                        boost::asio::detached);
  run_ready(io);
  CHECK_FALSE(w.woke);  // nothing new yet: it waits
  std::memcpy(p->data(), "abcd", 4);
  p->advance(4);
  run_ready(io);
  CHECK(w.woke);
  CHECK(w.saw == 4);
  CHECK_FALSE(w.failed);
  // Past what it has already: at once, without waiting.
  watcher again;
  boost::asio::co_spawn(io, watch(p, 3, clock_type::now() + std::chrono::hours(1), &again),
                        boost::asio::detached);
  run_ready(io);
  CHECK(again.woke);
  // More than the piece holds is capped at its size.
  p->advance(100);
  CHECK(p->whole());
  CHECK(p->received() == 10);
}

TEST_CASE("a receive that fails ends its relays; a whole piece cannot fail") {
  boost::asio::io_context io;
  auto p = std::make_shared<partial_piece>(io.get_executor(), 8, partial_piece::where::file);
  CHECK(p->data() == nullptr);  // the bytes are in the content file
  watcher w;
  boost::asio::co_spawn(io, watch(p, 0, clock_type::now() + std::chrono::hours(1), &w),
                        boost::asio::detached);
  run_ready(io);
  CHECK_FALSE(w.woke);
  p->fail();
  run_ready(io);
  CHECK(w.woke);
  CHECK(w.failed);

  auto whole = std::make_shared<partial_piece>(io.get_executor(), 8, partial_piece::where::file);
  whole->advance(8);
  whole->fail();  // every byte is there: relays may finish
  CHECK_FALSE(whole->failed());
}

TEST_CASE("a relay waiting on a stuck receive gives up at its deadline") {
  boost::asio::io_context io;
  auto p = std::make_shared<partial_piece>(io.get_executor(), 8, partial_piece::where::memory);
  watcher w;
  boost::asio::co_spawn(io, watch(p, 0, clock_type::now() + std::chrono::milliseconds(20), &w),
                        boost::asio::detached);
  io.run_for(std::chrono::seconds(5));
  CHECK(w.woke);
  CHECK(w.saw == 0);
  CHECK_FALSE(w.failed);
}

TEST_CASE("the task lists the pieces being received and moves its bitmap version") {
  test::task_fixture f;
  auto& t = *f.t;
  const auto v0 = t.version();
  auto p = std::make_shared<partial_piece>(f.io.get_executor(), 4 << 20,
                                           partial_piece::where::memory);
  REQUIRE(t.start_receiving(2, p));
  CHECK(t.receiving(2) == p);
  CHECK(t.receiving(1) == nullptr);
  CHECK(t.receiving_pieces() == std::vector<std::uint32_t>{2});
  CHECK(t.version() > v0);  // long-polling children learn of it
  // An endgame's second copy of the same piece is not relayed as well.
  auto other = std::make_shared<partial_piece>(f.io.get_executor(), 4 << 20,
                                               partial_piece::where::memory);
  CHECK_FALSE(t.start_receiving(2, other));
  t.stop_receiving(2, other.get());  // not the relayed one: no effect
  CHECK(t.receiving(2) == p);
  CHECK_FALSE(p->failed());
  // Pieces already readable are served from the content file, not received.
  test::task_fixture holds(true);
  CHECK_FALSE(holds.t->start_receiving(2, other));
  CHECK(holds.t->receiving_pieces().empty());

  // Written to the content file while not readable yet (the held-back last
  // piece): relayed from the file, the buffer is let go.
  auto tail = std::make_shared<partial_piece>(f.io.get_executor(), 4 << 20,
                                              partial_piece::where::memory);
  REQUIRE(t.start_receiving(3, tail));
  t.receiving_written(3);  // not whole yet: no change
  CHECK(t.receiving(3) == tail);
  tail->advance(4 << 20);
  t.receiving_written(3);
  REQUIRE(t.receiving(3) != nullptr);
  CHECK(t.receiving(3) != tail);
  CHECK(t.receiving(3)->data() == nullptr);
  CHECK(t.receiving(3)->whole());
  CHECK(tail.use_count() == 1);  // only this test holds the buffer now

  // A receive that stops short fails its relays.
  auto q = std::make_shared<partial_piece>(f.io.get_executor(), 4 << 20,
                                           partial_piece::where::memory);
  REQUIRE(t.start_receiving(0, q));
  const auto v1 = t.version();
  t.stop_receiving(0, q.get());
  CHECK(q->failed());
  CHECK(t.receiving(0) == nullptr);
  CHECK(t.version() > v1);
}

TEST_CASE("the receiving list round-trips and refuses bad entries") {
  using transfer::format_piece_list;
  using transfer::parse_piece_list;
  CHECK(format_piece_list({}).empty());
  CHECK(format_piece_list({3, 17, 40}) == "3,17,40");
  auto ok = parse_piece_list("3,17,40", 41);
  REQUIRE(ok);
  CHECK(*ok == std::vector<std::uint32_t>{3, 17, 40});
  auto empty = parse_piece_list("", 41);
  REQUIRE(empty);
  CHECK(empty->empty());
  // Past the task's pieces, not numbers, empty entries, signs.
  CHECK_FALSE(parse_piece_list("41", 41));
  CHECK_FALSE(parse_piece_list("1,x", 41));
  CHECK_FALSE(parse_piece_list("1,,2", 41));
  CHECK_FALSE(parse_piece_list("1,", 41));
  CHECK_FALSE(parse_piece_list("-1", 41));
  CHECK_FALSE(parse_piece_list(" 1", 41));
  CHECK_FALSE(parse_piece_list("99999999999999999999", 41));
  auto bad = parse_piece_list("5,70", 41);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("70") != std::string::npos);
  // At most kMaxPieceList entries.
  std::vector<std::uint32_t> many(transfer::kMaxPieceList);
  for (std::uint32_t i = 0; i < many.size(); ++i) many[i] = i;
  CHECK(parse_piece_list(format_piece_list(many), 100000));
  many.push_back(static_cast<std::uint32_t>(many.size()));
  CHECK_FALSE(parse_piece_list(format_piece_list(many), 100000));
}
