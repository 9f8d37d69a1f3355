#pragma once
// result<T>: expected failures as values (network, disk, bad input).
// An error carries a machine-checkable code and a message for people that says
// what failed, on what, and what to do.

#include <cassert>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace shoal {

enum class errc {
  ok = 0,
  invalid_argument,   // bad input from a client or a flag
  not_found,          // blob, manifest or task does not exist
  unauthorized,       // upstream said 401
  forbidden,          // policy refused (upstream not allowed, SSRF guard)
  too_large,          // a size limit was hit
  digest_mismatch,    // bytes do not hash to the expected digest
  upstream_error,     // registry answered with an unexpected status
  network,            // connect, reset, timeout
  io,                 // local disk error
  no_space,           // cache is full even after GC
  busy,               // resource is in use
  cancelled,          // shutdown or the caller went away
  corrupt,            // local metadata is inconsistent
  range_not_satisfiable,
  unsupported,
};

const std::error_category& shoal_category() noexcept;
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), shoal_category()};
}

struct error {
  std::error_code code;
  std::string message;

  error() = default;
  error(errc e, std::string msg) : code(make_error_code(e)), message(std::move(msg)) {}
  error(std::error_code c, std::string msg) : code(c), message(std::move(msg)) {}

  bool is(errc e) const noexcept { return code == make_error_code(e); }
  // "message (code text)" for logs.
  std::string describe() const;
};

template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT implicit
  // A default T (asio's co_spawn needs default-constructible results).
  result() requires std::is_default_constructible_v<T> : v_(std::in_place_index<0>) {}
  result(shoal::error err) : v_(std::in_place_index<1>, std::move(err)) {}  // NOLINT implicit

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { assert(has_value()); return std::get<0>(v_); }
  const T& value() const& { assert(has_value()); return std::get<0>(v_); }
  T&& value() && { assert(has_value()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const shoal::error& error() const& { assert(!has_value()); return std::get<1>(v_); }
  shoal::error&& error() && { assert(!has_value()); return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, shoal::error> v_;
};

template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(shoal::error err) : err_(std::move(err)), ok_(false) {}  // NOLINT implicit

  bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  const shoal::error& error() const& { assert(!ok_); return err_; }
  shoal::error&& error() && { assert(!ok_); return std::move(err_); }

 private:
  shoal::error err_;
  bool ok_ = true;
};

inline result<void> ok() { return {}; }

}  // namespace shoal

template <>
struct std::is_error_code_enum<shoal::errc> : std::true_type {};
