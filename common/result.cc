#include "common/result.h"

namespace shoal {
namespace {
class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "shoal"; }
  std::string message(int c) const override {
    switch (static_cast<errc>(c)) {
      case errc::ok: return "ok";
      case errc::invalid_argument: return "invalid argument";
      case errc::not_found: return "not found";
      case errc::unauthorized: return "unauthorized";
      case errc::forbidden: return "forbidden";
      case errc::too_large: return "too large";
      case errc::digest_mismatch: return "digest mismatch";
      case errc::upstream_error: return "upstream error";
      case errc::network: return "network error";
      case errc::io: return "i/o error";
      case errc::no_space: return "no space";
      case errc::busy: return "busy";
      case errc::cancelled: return "cancelled";
      case errc::corrupt: return "corrupt metadata";
      case errc::range_not_satisfiable: return "range not satisfiable";
      case errc::unsupported: return "unsupported";
    }
    return "unknown";
  }
};
}  // namespace

const std::error_category& shoal_category() noexcept {
  static const category c;
  return c;
}

std::string error::describe() const {
  return message + " (" + code.message() + ")";
}
}  // namespace shoal
