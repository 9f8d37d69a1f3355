#include "scheduler/resource/bitmap.h"

#include <algorithm>
#include <bit>

namespace shoal::scheduler {

namespace {
constexpr std::size_t words_for(std::uint32_t size) { return (std::size_t{size} + 63) / 64; }
}  // namespace

bitmap::bitmap(std::uint32_t size) : words_(words_for(size), 0), size_(size) {}

result<bitmap> bitmap::from_bytes(std::string_view bytes, std::uint32_t size) {
  const std::size_t max_bytes = (std::size_t{size} + 7) / 8;
  if (bytes.size() > max_bytes) {
    return error(errc::invalid_argument,
                 "finished_bitmap has " + std::to_string(bytes.size()) + " bytes but the task has " +
                     std::to_string(size) + " pieces (at most " + std::to_string(max_bytes) +
                     " bytes)");
  }
  bitmap b(size);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    auto byte = static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i]));
    b.words_[i / 8] |= byte << ((i % 8) * 8);
  }
  // Drop bits past the last piece so count() and all() stay exact.
  if (size % 64 != 0 && !b.words_.empty()) b.words_.back() &= (std::uint64_t{1} << (size % 64)) - 1;
  b.recount();
  return b;
}

std::string bitmap::to_bytes() const {
  std::string out((std::size_t{size_} + 7) / 8, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>((words_[i / 8] >> ((i % 8) * 8)) & 0xff);
  }
  return out;
}

bool bitmap::test(std::uint32_t i) const noexcept {
  return i < size_ && ((words_[i / 64] >> (i % 64)) & 1) != 0;
}

void bitmap::set(std::uint32_t i) noexcept {
  if (i >= size_ || test(i)) return;
  words_[i / 64] |= std::uint64_t{1} << (i % 64);
  ++count_;
}

void bitmap::reset(std::uint32_t i) noexcept {
  if (!test(i)) return;
  words_[i / 64] &= ~(std::uint64_t{1} << (i % 64));
  --count_;
}

std::uint32_t bitmap::count_and_not(const bitmap& other) const noexcept {
  std::uint32_t n = 0;
  const std::size_t common = std::min(words_.size(), other.words_.size());
  for (std::size_t i = 0; i < common; ++i) n += std::popcount(words_[i] & ~other.words_[i]);
  for (std::size_t i = common; i < words_.size(); ++i) n += std::popcount(words_[i]);
  return n;
}

void bitmap::merge(const bitmap& other) noexcept {
  const std::size_t common = std::min(words_.size(), other.words_.size());
  for (std::size_t i = 0; i < common; ++i) words_[i] |= other.words_[i];
  recount();
}

bitmap bitmap::inverted() const {
  bitmap out(size_);
  for (std::size_t i = 0; i < words_.size(); ++i) out.words_[i] = ~words_[i];
  if (size_ % 64 != 0 && !out.words_.empty())
    out.words_.back() &= (std::uint64_t{1} << (size_ % 64)) - 1;
  out.count_ = size_ - count_;
  return out;
}

std::vector<std::uint32_t> bitmap::missing() const {
  std::vector<std::uint32_t> out;
  out.reserve(size_ - count_);
  for (std::uint32_t i = 0; i < size_; ++i)
    if (!test(i)) out.push_back(i);
  return out;
}

std::vector<std::uint32_t> bitmap::indices() const {
  std::vector<std::uint32_t> out;
  out.reserve(count_);
  for (std::uint32_t i = 0; i < size_; ++i)
    if (test(i)) out.push_back(i);
  return out;
}

void bitmap::recount() noexcept {
  count_ = 0;
  for (auto w : words_) count_ += static_cast<std::uint32_t>(std::popcount(w));
}

}  // namespace shoal::scheduler
