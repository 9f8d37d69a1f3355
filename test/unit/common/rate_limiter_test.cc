#include "common/rate_limiter.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

using namespace std::chrono_literals;

namespace {

// A clock the test moves by hand, so no test sleeps.
struct fake_clock {
  std::chrono::steady_clock::time_point now{std::chrono::steady_clock::time_point{} + 1h};
  shoal::rate_limiter::clock_fn fn() {
    return [this] { return now; };
  }
};

}  // namespace

TEST_CASE("rate_limiter take() spends the burst, then asks to wait", "[rate_limiter]") {
  fake_clock clock;
  shoal::rate_limiter rl(1000, 1000, clock.fn());
  CHECK(rl.rate() == 1000);
  CHECK(rl.take(500) == 0ns);
  CHECK(rl.take(500) == 0ns);
  // Bucket empty: 500 bytes of debt at 1000 B/s.
  CHECK(rl.take(500) == 500ms);
  // Half a second pays the debt back exactly.
  clock.now += 500ms;
  CHECK(rl.take(100) == 100ms);
}

TEST_CASE("rate_limiter refills over time up to the burst", "[rate_limiter]") {
  fake_clock clock;
  shoal::rate_limiter rl(1000, 1000, clock.fn());
  CHECK(rl.take(1000) == 0ns);
  clock.now += 250ms;
  CHECK(rl.take(250) == 0ns);
  CHECK(rl.take(1) == 1ms);

  // A long idle period does not bank more than the burst.
  clock.now += 1h;
  CHECK(rl.take(1000) == 0ns);
  CHECK(rl.take(10) == 10ms);
}

TEST_CASE("rate_limiter lets a chunk larger than the burst through with a wait", "[rate_limiter]") {
  fake_clock clock;
  shoal::rate_limiter rl(1000, 1000, clock.fn());
  CHECK(rl.take(3000) == 2s);
  clock.now += 2s;
  CHECK(rl.take(0) == 0ns);
}

TEST_CASE("rate_limiter default burst", "[rate_limiter]") {
  fake_clock clock;
  // rate/10 when that is above 256 KiB ...
  shoal::rate_limiter fast(10 << 20, 0, clock.fn());
  CHECK(fast.take(1 << 20) == 0ns);
  CHECK(fast.take(1) > 0ns);
  // ... else 256 KiB.
  shoal::rate_limiter slow(100'000, 0, clock.fn());
  CHECK(slow.take(256ull * 1024) == 0ns);
  CHECK(slow.take(100) == 1ms);
}

TEST_CASE("rate_limiter with rate 0 is unlimited", "[rate_limiter]") {
  fake_clock clock;
  shoal::rate_limiter rl(0, 0, clock.fn());
  CHECK(rl.rate() == 0);
  for (int i = 0; i < 10; ++i) CHECK(rl.take(1ull << 40) == 0ns);
}

TEST_CASE("rate_limiter acquire() completes at once within the burst", "[rate_limiter]") {
  fake_clock clock;
  shoal::rate_limiter rl(1000, 1000, clock.fn());
  boost::asio::io_context io;
  bool done = false;
  auto run = [](shoal::rate_limiter& limiter, bool& flag) -> boost::asio::awaitable<void> {
    co_await limiter.acquire(1000);
    flag = true;
  };
  boost::asio::co_spawn(io, run(rl, done), boost::asio::detached);
  io.run();
  CHECK(done);
}
