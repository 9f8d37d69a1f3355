#include "common/piece.h"

#include <catch2/catch.hpp>

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

}  // namespace

TEST_CASE("piece_length_for picks a power of two in [4 MiB, 64 MiB]", "[piece]") {
  // 140e9 / 500 = 280e6 -> 2^29, clamped to 64 MiB.
  CHECK(shoal::piece_length_for(140'000'000'000ull) == 64 * kMiB);
  // 2 GiB / 500 = 4294967 is just above 2^22, so 2 GiB gets 8 MiB pieces;
  // 2 GB (decimal) / 500 = 4e6 -> 2^22 = 4 MiB.
  CHECK(shoal::piece_length_for(2 * kGiB) == 8 * kMiB);
  CHECK(shoal::piece_length_for(2'000'000'000ull) == 4 * kMiB);
  // The largest length that still gets the minimum piece.
  CHECK(shoal::piece_length_for(4 * kMiB * 500 + 499) == 4 * kMiB);
  CHECK(shoal::piece_length_for(4 * kMiB * 500 + 500) == 8 * kMiB);
  // 10e9 / 500 = 20e6 -> 2^25 = 32 MiB.
  CHECK(shoal::piece_length_for(10'000'000'000ull) == 32 * kMiB);
  CHECK(shoal::piece_length_for(0) == 4 * kMiB);
  CHECK(shoal::piece_length_for(1) == 4 * kMiB);
  CHECK(shoal::piece_length_for(1ull << 50) == 64 * kMiB);
  static_assert(shoal::piece_length_for(2'000'000'000ull) == 4 * kMiB);
}

TEST_CASE("piece count, offset and last piece size", "[piece]") {
  constexpr std::uint64_t big = 140'000'000'000ull;
  constexpr std::uint32_t len = shoal::piece_length_for(big);
  CHECK(shoal::piece_count(big, len) == 2087);
  CHECK(shoal::piece_offset(2086, len) == 2086ull * 64 * kMiB);
  CHECK(shoal::piece_size(0, big, len) == len);
  CHECK(shoal::piece_size(2086, big, len) == big - 2086ull * 64 * kMiB);
  CHECK(shoal::piece_size(2086, big, len) == 10'909'696);
  CHECK(shoal::piece_size(2087, big, len) == 0);

  // An exact multiple: the last piece is full.
  constexpr std::uint32_t small = shoal::piece_length_for(2 * kGiB);
  CHECK(shoal::piece_count(2 * kGiB, small) == 256);
  CHECK(shoal::piece_size(255, 2 * kGiB, small) == 8 * kMiB);
  CHECK(shoal::piece_size(256, 2 * kGiB, small) == 0);

  CHECK(shoal::piece_count(0, 4 * kMiB) == 0);
  CHECK(shoal::piece_count(1, 4 * kMiB) == 1);
  CHECK(shoal::piece_size(0, 1, 4 * kMiB) == 1);
}
