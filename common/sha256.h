#pragma once
// Streaming SHA-256 over OpenSSL EVP.

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace shoal {

class sha256 {
 public:
  sha256();
  ~sha256();
  sha256(sha256&&) noexcept;
  sha256& operator=(sha256&&) noexcept;
  void update(std::span<const char> data);
  void update(std::string_view data) { update(std::span<const char>(data.data(), data.size())); }
  // A C string or literal: hashes up to the NUL (without this overload "abc" is
  // ambiguous between the two above, and the span one would include the NUL).
  void update(const char* text) { update(std::string_view(text)); }
  // Finishes and returns 64 lowercase hex characters; the object is reset after.
  std::string finish_hex();

 private:
  struct ctx_deleter { void operator()(void* p) const; };
  std::unique_ptr<void, ctx_deleter> ctx_;
};

// One-shot helper.
std::string sha256_hex(std::string_view data);

}  // namespace shoal
