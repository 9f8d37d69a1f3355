// The source's first-copy rule (task::claim_upload): while a daemon is a
// swarm's source, each piece goes to one other daemon; a send that did not
// complete may be repeated after task::resend_after(), a delivered piece is
// not sent again; otherwise every request may be served.

#include "daemon/transfer/task_manager.h"

#include <catch2/catch.hpp>
#include <chrono>

#include "test/support/task_fixture.h"

namespace {

using namespace shoal;
using clock_type = std::chrono::steady_clock;
using fixture = test::task_fixture;

// A task whose daemon is the source: it sends each piece once while it reads.
struct source_fixture : fixture {
  explicit source_fixture(bool holds_all = false) : fixture(holds_all) {
    t->set_first_copy_only(true);
  }
};

}  // namespace

TEST_CASE("claim_upload: anyone may have any piece unless this daemon is a source",
          "[transfer][task]") {
  fixture f;
  const auto t0 = clock_type::now();
  for (int i = 0; i < 3; ++i) CHECK(f.t->claim_upload(0, t0));
}

TEST_CASE("claim_upload: a source sends each piece once, again after kResendAfter",
          "[transfer][task]") {
  source_fixture f;
  const auto t0 = clock_type::now();
  const auto resend = transfer::task::kResendAfter;
  CHECK(f.t->claim_upload(0, t0));
  CHECK_FALSE(f.t->claim_upload(0, t0 + std::chrono::milliseconds(10)));
  CHECK(f.t->claim_upload(1, t0 + std::chrono::milliseconds(10)));  // other pieces are free
  CHECK_FALSE(f.t->claim_upload(0, t0 + resend - std::chrono::milliseconds(1)));
  // nobody passed it on in time (the first child died?): a second copy
  CHECK(f.t->claim_upload(0, t0 + resend));
  CHECK_FALSE(f.t->claim_upload(0, t0 + resend + std::chrono::milliseconds(1)));
  CHECK_FALSE(f.t->claim_upload(4, t0));  // past the end
  // no longer the source (another was elected): no limit
  f.t->set_first_copy_only(false);
  CHECK(f.t->claim_upload(1, t0 + std::chrono::milliseconds(20)));
}

TEST_CASE("claim_upload: a source does not send a delivered piece again while it reads",
          "[transfer][task]") {
  // The child that has it passes it on; second copies took ~10% of the
  // source's uplink at 16 nodes (bench/swarm).
  source_fixture f;
  const auto t0 = clock_type::now();
  const auto resend = transfer::task::kResendAfter;
  CHECK(f.t->claim_upload(0, t0));
  f.t->piece_delivered(0, std::chrono::milliseconds(100));
  CHECK_FALSE(f.t->claim_upload(0, t0 + resend));
  CHECK_FALSE(f.t->claim_upload(0, t0 + transfer::task::kResendMax * 2));
  // a piece whose send did not complete still goes again after the window
  CHECK(f.t->claim_upload(1, t0));
  CHECK(f.t->claim_upload(1, t0 + f.t->resend_after()));
  // no longer the source: no limit
  f.t->set_first_copy_only(false);
  CHECK(f.t->claim_upload(0, t0 + resend));
}

TEST_CASE("claim_upload: a source holding every piece sends any piece to anyone",
          "[transfer][task]") {
  // Its uplink has nothing new left to carry: the children catching up take
  // from it like from any other parent (8 nodes, bench/swarm: 23.45 s against
  // 24.26 s with the rule kept to the end).
  source_fixture f(true);
  const auto t0 = clock_type::now();
  for (int i = 0; i < 3; ++i) CHECK(f.t->claim_upload(0, t0));
  source_fixture g;  // holds nothing: the rule applies
  CHECK(g.t->claim_upload(0, t0));
  CHECK_FALSE(g.t->claim_upload(0, t0));
}

TEST_CASE("resend_after follows the time pieces take to send", "[transfer][task]") {
  using std::chrono::milliseconds;
  source_fixture f;
  CHECK(f.t->resend_after() == transfer::task::kResendAfter);  // nothing measured yet
  // slow links: a piece took 2 s to send, so a child needs a few times that
  // to pass it on to the others; the window grows to kResendFactor x 2 s
  f.t->piece_delivered(0, milliseconds(2000));
  const auto window = milliseconds(static_cast<int>(transfer::task::kResendFactor * 2000));
  CHECK(f.t->resend_after() == window);
  const auto t0 = clock_type::now();
  CHECK(f.t->claim_upload(1, t0));
  CHECK_FALSE(f.t->claim_upload(1, t0 + window - milliseconds(1)));
  CHECK(f.t->claim_upload(1, t0 + window));
  // fast sends pull it down (EWMA), never below kResendMin
  for (int i = 0; i < 50; ++i) f.t->piece_delivered(2, milliseconds(1));
  CHECK(f.t->resend_after() == transfer::task::kResendMin);
  // and never above kResendMax
  for (int i = 0; i < 50; ++i) f.t->piece_delivered(2, milliseconds(60000));
  CHECK(f.t->resend_after() == transfer::task::kResendMax);
  CHECK(f.t->delivered(0));
  CHECK(f.t->delivered(2));
  CHECK_FALSE(f.t->delivered(3));
}
