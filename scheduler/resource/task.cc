#include "scheduler/resource/task.h"

#include <algorithm>

#include "common/piece.h"
#include "scheduler/resource/host.h"

namespace shoal::scheduler {

std::string_view to_string(task_state s) {
  switch (s) {
    case task_state::running: return "running";
    case task_state::sealed: return "sealed";
    case task_state::poisoned: return "poisoned";
  }
  return "unknown";
}

task::task(task_id id, std::uint64_t content_length, std::uint32_t piece_length, v1::Origin origin,
           time_point created)
    : id_(std::move(id)),
      content_length_(content_length),
      piece_length_(piece_length),
      piece_count_(shoal::piece_count(content_length, piece_length)),
      origin_(std::move(origin)),
      created_(created),
      digests_(piece_count_),
      known_(piece_count_),
      holders_(piece_count_, 0) {}

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

peer& task::add_peer(const host_id& h, const struct host* rec, stream_id s, std::uint64_t seq,
                     time_point now) {
  auto [it, inserted] = peers_.try_emplace(h, h, id_, s, seq, piece_count_, now);
  peer& p = it->second;
  if (!inserted) return p;
  p.host_rec = rec;
  p.roster_slot = roster_.size();
  roster_.push_back(&p);
  index_zone(p);
  return p;
}

void task::erase_peer(const host_id& h) {
  auto it = peers_.find(h);
  if (it == peers_.end()) return;
  peer& p = it->second;
  set_parents(p, {});
  if (p.live()) count_pieces(p, -1);
  unindex_zone(p);
  // Swap-remove from the roster, keeping the moved peer's slot right.
  peer* last = roster_.back();
  roster_[p.roster_slot] = last;
  last->roster_slot = p.roster_slot;
  roster_.pop_back();
  peers_.erase(it);
}

void task::count_pieces(const peer& p, int delta) {
  for (std::uint32_t i : p.finished.indices()) {
    if (delta > 0) {
      if (holders_[i]++ == 0) ++held_pieces_;
    } else if (holders_[i] > 0 && --holders_[i] == 0) {
      --held_pieces_;
    }
  }
}

bool task::add_finished(peer& p, std::uint32_t i) {
  if (i >= piece_count_ || p.finished.test(i)) return false;
  p.finished.set(i);
  if (p.live() && holders_[i]++ == 0) ++held_pieces_;
  return true;
}

void task::set_finished(peer& p, bitmap pieces) {
  if (p.live()) count_pieces(p, -1);
  p.finished = std::move(pieces);
  if (p.live()) count_pieces(p, +1);
}

bool task::mark_failed(peer& p) {
  const bool was_live = p.live();
  if (!p.mark_failed()) return false;
  if (was_live) count_pieces(p, -1);
  return true;
}

bitmap task::held_by_live_peers() const {
  bitmap held(piece_count_);
  for (std::uint32_t i = 0; i < piece_count_; ++i)
    if (holders_[i] > 0) held.set(i);
  return held;
}

bitmap task::missing_everywhere() const {
  bitmap missing(piece_count_);
  if (!anything_missing()) return missing;
  for (std::uint32_t i = 0; i < piece_count_; ++i)
    if (holders_[i] == 0) missing.set(i);
  return missing;
}

void task::set_parents(peer& child, std::vector<host_id> parents) {
  // Only the parents that change are touched: a re-score usually keeps most
  // of them, and each index update is a tree walk by host id.
  auto in = [](const std::vector<host_id>& v, const host_id& h) {
    return std::find(v.begin(), v.end(), h) != v.end();
  };
  for (const auto& h : child.parents) {
    if (in(parents, h)) continue;
    if (peer* p = find_peer(h); p != nullptr && p->children > 0) --p->children;
    if (auto it = children_.find(h); it != children_.end()) {
      it->second.erase(child.host);
      if (it->second.empty()) children_.erase(it);
    }
  }
  for (const auto& h : parents) {
    if (in(child.parents, h)) continue;
    if (peer* p = find_peer(h)) ++p->children;
    children_[h].insert(child.host);
  }
  child.parents = std::move(parents);
}

std::vector<host_id> task::children_of(const host_id& parent) const {
  auto it = children_.find(parent);
  if (it == children_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

const peer* task::zone_gateway(const std::string& zone) const {
  auto z = zones_.find(zone);
  if (z == zones_.end()) return nullptr;
  for (const auto& [hid, p] : z->second)
    if (p->live()) return p;
  return nullptr;
}

bool task::lowest_live_in_zone(const std::string& zone, const host_id& h) const {
  const peer* g = zone_gateway(zone);
  return g == nullptr || !(g->host < h);
}

void task::index_zone(peer& p) {
  p.zone_key = p.host_rec == nullptr ? std::string() : p.host_rec->info.zone();
  if (!p.zone_key.empty()) zones_[p.zone_key][p.host] = &p;
}

void task::unindex_zone(const peer& p) {
  if (p.zone_key.empty()) return;
  if (auto z = zones_.find(p.zone_key); z != zones_.end()) {
    z->second.erase(p.host);
    if (z->second.empty()) zones_.erase(z);
  }
}

void task::rezone(peer& p) {
  unindex_zone(p);
  index_zone(p);
}

}  // namespace shoal::scheduler
