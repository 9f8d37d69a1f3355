#pragma once
// Strong ids for the scheduler's records, so a host id is never passed where a
// task id belongs.

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace shoal::scheduler {

template <class Tag>
class basic_id {
 public:
  basic_id() = default;
  explicit basic_id(std::string v) : value_(std::move(v)) {}

  const std::string& str() const noexcept { return value_; }
  bool empty() const noexcept { return value_.empty(); }

  friend auto operator<=>(const basic_id&, const basic_id&) = default;
  friend bool operator==(const basic_id&, const basic_id&) = default;

 private:
  std::string value_;
};

using host_id = basic_id<struct host_id_tag>;
using task_id = basic_id<struct task_id_tag>;

// One AnnouncePeer stream; assigned by the service, never reused.
enum class stream_id : std::uint64_t {};

}  // namespace shoal::scheduler

template <class Tag>
struct std::hash<shoal::scheduler::basic_id<Tag>> {
  std::size_t operator()(const shoal::scheduler::basic_id<Tag>& id) const noexcept {
    return std::hash<std::string>{}(id.str());
  }
};
