#include "common/sha256.h"

#include <catch2/catch.hpp>
#include <string>

namespace {

constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

}  // namespace

TEST_CASE("sha256 of known vectors", "[sha256]") {
  CHECK(shoal::sha256_hex("") == kEmpty);
  CHECK(shoal::sha256_hex("abc") == kAbc);
  CHECK(shoal::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("sha256 streaming equals one-shot", "[sha256]") {
  std::string data;
  for (int i = 0; i < 100000; ++i) data.push_back(static_cast<char>(i * 31 + 7));

  shoal::sha256 h;
  // Uneven chunk sizes cross the 64-byte block boundary in different places.
  std::size_t off = 0;
  for (std::size_t chunk = 1; off < data.size(); chunk = chunk * 3 + 1) {
    std::size_t n = std::min(chunk, data.size() - off);
    h.update(std::string_view(data).substr(off, n));
    off += n;
  }
  CHECK(h.finish_hex() == shoal::sha256_hex(data));
}

TEST_CASE("sha256 resets after finish and survives a move", "[sha256]") {
  shoal::sha256 h;
  h.update("abc");
  CHECK(h.finish_hex() == kAbc);
  CHECK(h.finish_hex() == kEmpty);

  h.update("ab");
  shoal::sha256 moved = std::move(h);
  moved.update("c");
  CHECK(moved.finish_hex() == kAbc);
}
