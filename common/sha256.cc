#include "common/sha256.h"

#include <openssl/evp.h>

#include <new>
#include <stdexcept>

namespace shoal {
namespace {

EVP_MD_CTX* as_ctx(void* p) { return static_cast<EVP_MD_CTX*>(p); }

// A fresh context ready for update(); allocation or init failures are not
// recoverable (out of memory or a broken OpenSSL), so they throw.
void* new_ctx() {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) throw std::bad_alloc();
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    throw std::runtime_error("sha256: EVP_DigestInit_ex failed");
  }
  return ctx;
}

}  // namespace

void sha256::ctx_deleter::operator()(void* p) const { EVP_MD_CTX_free(as_ctx(p)); }

sha256::sha256() : ctx_(new_ctx()) {}
sha256::~sha256() = default;
sha256::sha256(sha256&&) noexcept = default;
sha256& sha256::operator=(sha256&&) noexcept = default;

void sha256::update(std::span<const char> data) {
  // A moved-from object has no context; give it a fresh one so it stays usable.
  if (!ctx_) ctx_.reset(new_ctx());
  if (data.empty()) return;
  if (EVP_DigestUpdate(as_ctx(ctx_.get()), data.data(), data.size()) != 1) {
    throw std::runtime_error("sha256: EVP_DigestUpdate failed");
  }
}

std::string sha256::finish_hex() {
  if (!ctx_) ctx_.reset(new_ctx());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(as_ctx(ctx_.get()), md, &len) != 1 ||
      EVP_DigestInit_ex(as_ctx(ctx_.get()), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("sha256: EVP_DigestFinal_ex failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::size_t{len} * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 0x0f]);
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  sha256 h;
  h.update(data);
  return h.finish_hex();
}

}  // namespace shoal
