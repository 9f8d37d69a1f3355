#pragma once
// The scheduler's whole state: hosts, tasks and their peers, and which stream
// each peer speaks on. Pure data: no I/O, no threads, no clock of its own (every
// call that needs time takes `now`). It is owned by one thread (see
// scheduler/service/README.md).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "scheduler/resource/clock.h"
#include "scheduler/resource/host.h"
#include "scheduler/resource/ids.h"
#include "scheduler/resource/peer.h"
#include "scheduler/resource/task.h"
#include "scheduler/resource/traffic.h"
#include "shoal/v1/scheduler.pb.h"

namespace shoal::scheduler {

class registry {
 public:
  // --- hosts
  // Upserts a host from its heartbeat (info.id() must be non-empty).
  host& announce(const v1::Host& info, time_point now);
  // The host a peer registers from; if its heartbeat has not arrived yet, an
  // unannounced record is created (no address yet, expires like any host).
  host& ensure_host(const host_id& id, time_point now);
  host* find_host(const host_id& id);
  const host* find_host(const host_id& id) const;
  const std::map<host_id, host>& hosts() const noexcept { return hosts_; }
  // The host of a peer: its record pointer, or a lookup if it was added before its host.
  const host* host_of(const peer& p) const {
    return p.host_rec != nullptr ? p.host_rec : find_host(p.host);
  }
  // Hosts whose last heartbeat is older than ttl.
  std::vector<host_id> expired_hosts(time_point now, duration ttl) const;
  // Removes a host; its peers must have been removed first.
  void erase_host(const host_id& id);

  // --- tasks
  task* find_task(const task_id& id);
  const task* find_task(const task_id& id) const;
  task& create_task(const task_id& id, std::uint64_t content_length, std::uint32_t piece_length,
                    const v1::Origin& origin, time_point now);
  // Removes a task and all its peers.
  void erase_task(const task_id& id);
  std::map<task_id, task>& tasks() noexcept { return tasks_; }
  const std::map<task_id, task>& tasks() const noexcept { return tasks_; }

  // --- peers
  // Adds the peer (host, t) speaking on stream s; the host must exist and have
  // no peer in t yet.
  peer& add_peer(task& t, const host_id& h, stream_id s, time_point now);
  // Removes a peer, unlinking its stream and host and its parents' children counts.
  // Children that listed it keep the stale id until they are re-scheduled.
  void erase_peer(task& t, const host_id& h);
  struct peer_ref {
    task* t;
    peer* p;
  };
  std::optional<peer_ref> find_by_stream(stream_id s);
  std::size_t peer_count() const noexcept { return streams_.size(); }

  // --- traffic: bytes by origin and parent (the dashboard's figures)
  traffic_stats& traffic() noexcept { return traffic_; }
  const traffic_stats& traffic() const noexcept { return traffic_; }

 private:
  std::map<host_id, host> hosts_;
  std::map<task_id, task> tasks_;
  // A stream's task and peer, by pointer: both live in node-based maps, and
  // erase_peer/erase_task drop the entry before the records go. Every event
  // is looked up here; two lookups by string id per event were measurable.
  std::unordered_map<std::uint64_t, peer_ref> streams_;
  std::unordered_map<std::string, std::uint32_t> zone_ids_;  // host::zone_id
  std::uint64_t next_seq_ = 1;
  traffic_stats traffic_;
};

}  // namespace shoal::scheduler
