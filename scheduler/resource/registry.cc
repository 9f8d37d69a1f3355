#include "scheduler/resource/registry.h"

#include <cassert>

namespace shoal::scheduler {

namespace {
std::uint64_t key(stream_id s) { return static_cast<std::uint64_t>(s); }
}  // namespace

host& registry::announce(const v1::Host& info, time_point now) {
  host& h = ensure_host(host_id(info.id()), now);
  const bool rezone = h.info.zone() != info.zone();
  h.info = info;
  if (rezone || h.zone_id == 0) {
    h.zone_id = 0;
    if (!info.zone().empty()) {
      auto [it, inserted] =
          zone_ids_.try_emplace(info.zone(), static_cast<std::uint32_t>(zone_ids_.size() + 1));
      h.zone_id = it->second;
    }
  }
  h.last_seen = now;
  h.announced = true;
  // Its peers are indexed by zone in their tasks (the gateway rule).
  if (rezone) {
    for (const auto& tid : h.tasks)
      if (task* t = find_task(tid))
        if (peer* p = t->find_peer(h.id)) t->rezone(*p);
  }
  return h;
}

host& registry::ensure_host(const host_id& id, time_point now) {
  auto [it, inserted] = hosts_.try_emplace(id);
  host& h = it->second;
  if (inserted) {
    h.id = id;
    h.info.set_id(id.str());
    h.first_seen = now;
    h.last_seen = now;
  }
  return h;
}

host* registry::find_host(const host_id& id) {
  auto it = hosts_.find(id);
  return it == hosts_.end() ? nullptr : &it->second;
}

const host* registry::find_host(const host_id& id) const {
  auto it = hosts_.find(id);
  return it == hosts_.end() ? nullptr : &it->second;
}

std::vector<host_id> registry::expired_hosts(time_point now, duration ttl) const {
  std::vector<host_id> out;
  for (const auto& [id, h] : hosts_)
    if (h.expired(now, ttl)) out.push_back(id);
  return out;
}

void registry::erase_host(const host_id& id) {
  auto it = hosts_.find(id);
  if (it == hosts_.end()) return;
  assert(it->second.tasks.empty());
  // Never leave a peer pointing at a freed record (callers remove peers first).
  for (const auto& tid : it->second.tasks)
    if (task* t = find_task(tid))
      if (peer* p = t->find_peer(id)) p->host_rec = nullptr;
  hosts_.erase(it);
}

task* registry::find_task(const task_id& id) {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

const task* registry::find_task(const task_id& id) const {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

task& registry::create_task(const task_id& id, std::uint64_t content_length,
                            std::uint32_t piece_length, const v1::Origin& origin, time_point now) {
  auto [it, inserted] = tasks_.try_emplace(id, id, content_length, piece_length, origin, now);
  assert(inserted);
  return it->second;
}

void registry::erase_task(const task_id& id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  for (auto& [h, p] : it->second.peers()) {
    streams_.erase(key(p.stream));
    if (host* hh = find_host(h)) hh->tasks.erase(id);
  }
  // Before the task goes: callers pass the task's own id (t.id()).
  traffic_.forget_task(id);
  tasks_.erase(it);
}

peer& registry::add_peer(task& t, const host_id& h, stream_id s, time_point now) {
  assert(t.find_peer(h) == nullptr);
  host* hh = find_host(h);
  peer& p = t.add_peer(h, hh, s, next_seq_++, now);
  streams_[key(s)] = peer_ref{&t, &p};
  if (hh != nullptr) hh->tasks.insert(t.id());
  return p;
}

void registry::erase_peer(task& t, const host_id& h) {
  peer* p = t.find_peer(h);
  if (p == nullptr) return;
  streams_.erase(key(p->stream));
  if (host* hh = find_host(h)) hh->tasks.erase(t.id());
  if (t.source.current == h) t.source.current.reset();
  t.erase_peer(h);
}

std::optional<registry::peer_ref> registry::find_by_stream(stream_id s) {
  auto it = streams_.find(key(s));
  if (it == streams_.end()) return std::nullopt;
  return it->second;
}

}  // namespace shoal::scheduler
