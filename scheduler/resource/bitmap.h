#pragma once
// A fixed-size set of piece indices. Wire encoding (Register.finished_bitmap,
// Parent.finished_bitmap): bit i is bit (i % 8) of byte (i / 8), least
// significant bit first; trailing bytes may be omitted (zero).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shoal::scheduler {

class bitmap {
 public:
  bitmap() = default;
  explicit bitmap(std::uint32_t size);

  // Decodes the wire form for a task of `size` pieces. Shorter input means the
  // remaining pieces are absent; bits past `size` in the last byte are ignored;
  // more bytes than the task needs is an error (it is some other task's bitmap).
  static result<bitmap> from_bytes(std::string_view bytes, std::uint32_t size);
  std::string to_bytes() const;

  std::uint32_t size() const noexcept { return size_; }
  std::uint32_t count() const noexcept { return count_; }
  bool all() const noexcept { return count_ == size_; }
  bool none() const noexcept { return count_ == 0; }
  bool test(std::uint32_t i) const noexcept;
  // Out-of-range indices are ignored (callers validate against the task first).
  void set(std::uint32_t i) noexcept;
  void reset(std::uint32_t i) noexcept;

  // |this \ other|: pieces this holds that other lacks. Sizes must match.
  std::uint32_t count_and_not(const bitmap& other) const noexcept;
  // this |= other. Sizes must match.
  void merge(const bitmap& other) noexcept;
  // The pieces not in this.
  bitmap inverted() const;
  // Pieces not in this, ascending.
  std::vector<std::uint32_t> missing() const;
  // Pieces in this, ascending.
  std::vector<std::uint32_t> indices() const;

  friend bool operator==(const bitmap&, const bitmap&) = default;

 private:
  void recount() noexcept;

  std::vector<std::uint64_t> words_;
  std::uint32_t size_ = 0;
  std::uint32_t count_ = 0;
};

}  // namespace shoal::scheduler
