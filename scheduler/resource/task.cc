#include "scheduler/resource/task.h"

#include "common/piece.h"

namespace shoal::scheduler {

std::string_view to_string(task_state s) {
  switch (s) {
    case task_state::running: return "running";
    case task_state::sealed: return "sealed";
    case task_state::poisoned: return "poisoned";
  }
  return "unknown";
}

task::task(task_id id, std::uint64_t content_length, std::uint32_t piece_length,
           v1::Origin origin, time_point created)
    : id_(std::move(id)),
      content_length_(content_length),
      piece_length_(piece_length),
      piece_count_(shoal::piece_count(content_length, piece_length)),
      origin_(std::move(origin)),
      created_(created),
      digests_(piece_count_),
      known_(piece_count_) {}

std::uint64_t task::piece_bytes(std::uint32_t i) const noexcept {
  return shoal::piece_size(i, content_length_, piece_length_);
}

bool task::seal() noexcept {
  if (state_ != task_state::running) return false;
  state_ = task_state::sealed;
  return true;
}

bool task::poison() noexcept {
  if (state_ != task_state::running) return false;
  state_ = task_state::poisoned;
  return true;
}

digest_update task::record_digest(std::uint32_t i, std::string_view sha256) {
  if (known_.test(i)) return digests_[i] == sha256 ? digest_update::same : digest_update::conflict;
  digests_[i] = std::string(sha256);
  known_.set(i);
  return digest_update::added;
}

peer* task::find_peer(const host_id& h) {
  auto it = peers_.find(h);
  return it == peers_.end() ? nullptr : &it->second;
}

const peer* task::find_peer(const host_id& h) const {
  auto it = peers_.find(h);
  return it == peers_.end() ? nullptr : &it->second;
}

bitmap task::held_by_live_peers() const {
  bitmap held(piece_count_);
  for (const auto& [h, p] : peers_)
    if (p.live()) held.merge(p.finished);
  return held;
}

bitmap task::missing_everywhere() const { return held_by_live_peers().inverted(); }

void task::set_parents(peer& child, std::vector<host_id> parents) {
  for (const auto& h : child.parents)
    if (peer* p = find_peer(h); p != nullptr && p->children > 0) --p->children;
  for (const auto& h : parents)
    if (peer* p = find_peer(h)) ++p->children;
  child.parents = std::move(parents);
}

}  // namespace shoal::scheduler
