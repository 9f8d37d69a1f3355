#include "scheduler/scheduling/engine.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "common/digest.h"
#include "common/log.h"
#include "scheduler/scheduling/election.h"

namespace shoal::scheduler {

namespace {

std::shared_ptr<spdlog::logger> log() {
  static auto l = shoal::logger("scheduler");
  return l;
}

std::int64_t seconds(duration d) {
  return std::chrono::duration_cast<std::chrono::seconds>(d).count();
}

v1::Decision from_origin_decision(const bitmap& pieces) {
  v1::Decision d;
  auto* f = d.mutable_from_origin();
  for (std::uint32_t i : pieces.indices()) f->add_pieces(i);
  return d;
}

v1::Decision stop_from_origin_decision(std::string message) {
  v1::Decision d;
  d.mutable_stop_from_origin()->set_message(std::move(message));
  return d;
}

bool same_set(std::vector<host_id> a, std::vector<host_id> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

}  // namespace

engine::engine(engine_options opts, const clock& clk, decision_sink& sink, scheduler_metrics& m,
               std::uint64_t seed)
    : opts_(opts), clock_(clk), sink_(sink), metrics_(m), eval_(opts.evaluation), rng_(seed) {}

// ---------------------------------------------------------------- peer events

void engine::on_event(stream_id s, const v1::PeerEvent& ev) {
  auto ref = reg_.find_by_stream(s);
  if (ev.event_case() == v1::PeerEvent::kRegister) {
    if (ref) {
      task& t = *ref->t;
      const host_id h = ref->p->host;
      abort_stream(s, v1::Abort::INVALID,
                   "task " + t.id().str() +
                       ": a second Register on one stream (open one AnnouncePeer stream per "
                       "host and task)");
      remove_peer(t, h, "registered twice on one stream", true);
    } else {
      on_register(s, ev.register_());
    }
    update_gauges();
    return;
  }
  if (!ref) {
    abort_stream(s, v1::Abort::INVALID,
                 "the first event on an AnnouncePeer stream must be Register");
    return;
  }
  task& t = *ref->t;
  peer& p = *ref->p;
  ++t.rescore.changes;
  switch (ev.event_case()) {
    case v1::PeerEvent::kPieceFinished: on_piece_finished(t, p, ev.piece_finished()); break;
    case v1::PeerEvent::kPieceFailed: on_piece_failed(t, p, ev.piece_failed()); break;
    case v1::PeerEvent::kSourceFinished: on_source_finished(t, p, ev.source_finished()); break;
    case v1::PeerEvent::kDone: on_done(t, p); break;
    case v1::PeerEvent::kFailed: on_failed(t, p, ev.failed()); break;
    case v1::PeerEvent::kRegister:
    case v1::PeerEvent::EVENT_NOT_SET:
      log()->warn("task {} host {}: empty PeerEvent ignored", t.id().str(), p.host.str());
      break;
  }
  update_gauges();
}

void engine::on_stream_end(stream_id s) {
  if (auto ref = reg_.find_by_stream(s)) {
    const host_id h = ref->p->host;
    remove_peer(*ref->t, h, "stream ended", true);
    update_gauges();
  }
}

void engine::on_register(stream_id s, const v1::Register& r) {
  const time_point now = clock_.now();
  if (r.host_id().empty()) {
    abort_stream(s, v1::Abort::INVALID, "Register without host_id");
    return;
  }
  if (!is_sha256_hex(r.task_id())) {
    abort_stream(s, v1::Abort::INVALID,
                 "Register from host " + r.host_id() + ": task_id '" + r.task_id() +
                     "' is not 64 lowercase hex (a blob digest's hex or a URL task hash)");
    return;
  }
  const task_id tid(r.task_id());
  const host_id hid(r.host_id());
  const std::string what = "task " + tid.str() + " host " + hid.str();
  if (r.piece_length() == 0) {
    abort_stream(s, v1::Abort::INVALID, what + ": Register with piece_length 0");
    return;
  }
  const std::uint64_t pieces64 =
      (r.content_length() + r.piece_length() - 1) / std::uint64_t{r.piece_length()};
  if (pieces64 > opts_.max_piece_count) {
    abort_stream(s, v1::Abort::INVALID,
                 what + ": " + std::to_string(pieces64) + " pieces is more than the scheduler accepts (" +
                     std::to_string(opts_.max_piece_count) + "): use a larger piece length");
    return;
  }
  const auto n = static_cast<std::uint32_t>(pieces64);

  task* t = reg_.find_task(tid);
  if (t != nullptr &&
      (t->content_length() != r.content_length() || t->piece_length() != r.piece_length())) {
    abort_stream(s, v1::Abort::INVALID,
                 what + ": registered content_length " + std::to_string(r.content_length()) +
                     " piece_length " + std::to_string(r.piece_length()) + ", but the task has " +
                     std::to_string(t->content_length()) + " and " +
                     std::to_string(t->piece_length()) +
                     " from its other peers (check the daemons' piece-length settings and the "
                     "blob size the registry reports)");
    return;
  }
  for (int i = 0; i < r.known_digests_size(); ++i) {
    const auto& kd = r.known_digests(i);
    if (kd.index() >= n || !is_sha256_hex(kd.sha256())) {
      abort_stream(s, v1::Abort::INVALID,
                   what + ": known_digests[" + std::to_string(i) + "] (piece " +
                       std::to_string(kd.index()) + ", '" + kd.sha256() +
                       "') is out of range or not 64 lowercase hex");
      return;
    }
  }
  auto bm = bitmap::from_bytes(r.finished_bitmap(), n);
  if (!bm) {
    abort_stream(s, v1::Abort::INVALID, what + ": " + bm.error().message);
    return;
  }

  // A host registering a task again (its old stream is stale): the new stream wins.
  if (t != nullptr) {
    if (peer* old = t->find_peer(hid)) {
      log()->info("{}: registered again on a new stream; closing the old one", what);
      sink_.close(old->stream);
      remove_peer(*t, hid, "replaced by a newer stream", false);
    }
  }
  if (t == nullptr) {
    t = &reg_.create_task(tid, r.content_length(), r.piece_length(), r.origin(), now);
    log()->info("task {} created by host {}: {} bytes, {} pieces of {} bytes", tid.str(),
                hid.str(), r.content_length(), n, r.piece_length());
  }
  const std::string zone = reg_.ensure_host(hid, now).info.zone();
  const peer* gateway = zone.empty() ? nullptr : t->zone_gateway(zone);
  const std::optional<host_id> gateway_before =
      gateway == nullptr ? std::nullopt : std::optional(gateway->host);
  peer& p = reg_.add_peer(*t, hid, s, now);
  p.has_client = r.has_client();
  p.was_source = r.was_source();

  if (t->state() == task_state::sealed) {
    for (const auto& kd : r.known_digests()) {
      if (t->digest(kd.index()) != kd.sha256()) {
        abort_stream(s, v1::Abort::POISONED,
                     what + ": your digest of piece " + std::to_string(kd.index()) + " (" +
                         kd.sha256() + ") differs from the task's verified list (" +
                         t->digest(kd.index()) + "): drop your copy and register again");
        remove_peer(*t, hid, "digests conflict with the sealed list", true);
        return;
      }
    }
  } else {
    std::uint32_t adopted = 0;
    for (const auto& kd : r.known_digests()) {
      switch (t->record_digest(kd.index(), kd.sha256())) {
        case digest_update::added:
          ++adopted;
          queue_digest(*t, kd.index(), s);
          break;
        case digest_update::same: break;
        case digest_update::conflict:
          poison(*t, what + ": re-registered with digest " + kd.sha256() + " for piece " +
                         std::to_string(kd.index()) + " but " + t->digest(kd.index()) +
                         " is known: the copies disagree, starting over");
          return;
      }
    }
    if (adopted > 0)
      log()->info("{}: adopted {} piece digests from its re-registration ({} of {} known)", what,
                  adopted, t->known().count(), n);
  }

  // Only pieces whose digest is known count as held: anything else cannot be
  // verified by a child and has to come from origin anyway.
  bitmap held = std::move(*bm);
  std::uint32_t unverifiable = 0;
  for (std::uint32_t i : held.indices()) {
    if (!t->digest_known(i)) {
      held.reset(i);
      ++unverifiable;
    }
  }
  if (unverifiable > 0)
    log()->debug("{}: {} held pieces have no known digest and are not offered", what,
                 unverifiable);
  t->set_finished(p, std::move(held));
  // A new peer may hold pieces, or be the source, or be a parent of its zone:
  // the children short of parents get another look at the next maintain().
  t->rescore.new_supply = true;
  ++t->rescore.changes;
  if (!zone.empty()) check_gateway(*t, zone, gateway_before);

  v1::Decision digests;
  auto* pd = digests.mutable_digests();
  for (std::uint32_t i : t->known().indices()) {
    auto* d = pd->add_digests();
    d->set_index(i);
    d->set_sha256(t->digest(i));
  }
  pd->set_sealed(t->state() == task_state::sealed);
  emit(s, std::move(digests));

  ensure_source(*t);
  if (p.was_source && t->source.current != hid) {
    // It was reading origin for the previous scheduler; stop it so origin is read once.
    emit(s, stop_from_origin_decision(
                "task " + tid.str() +
                (t->source.current ? ": host " + t->source.current->str() + " is the source now"
                                   : ": no piece is missing everywhere") +
                ": fetch what you lack from parents"));
  }
  // The children short of parents get the new peer at the next sweep, not
  // the next maintain(): in a swarm that starts at once, the peers that
  // registered first would otherwise wait up to a tick for the others.
  queue_short_of_parents(*t, &p);
  if (t->source.current != hid) reschedule(*t, p, true, choice_trigger::registered);
  log()->info("{}: registered (holds {}/{} pieces, has_client={}, source={})", what,
              p.finished.count(), n, p.has_client, p.is_source);
}

void engine::on_piece_finished(task& t, peer& p, const v1::PieceFinished& ev) {
  const std::uint32_t i = ev.index();
  // Built only for the log lines below (this is the most frequent event).
  auto what = [&] { return "task " + t.id().str() + " host " + p.host.str(); };
  if (i >= t.piece_count() || !is_sha256_hex(ev.sha256())) {
    ++p.bad_reports;
    log()->warn(
        "{}: PieceFinished for piece {} with digest '{}' is out of range or malformed; "
        "ignored",
        what(), i, ev.sha256());
    return;
  }
  const time_point now = clock_.now();
  if (ev.parent_host_id().empty()) {
    switch (t.record_digest(i, ev.sha256())) {
      case digest_update::added: queue_digest(t, i, p.stream); break;
      case digest_update::same: break;
      case digest_update::conflict:
        if (t.state() == task_state::sealed) {
          ++p.bad_reports;
          log()->warn("{}: piece {} read from origin hashes to {}, not the verified {}; ignored",
                      what(), i, ev.sha256(), t.digest(i));
          return;
        }
        poison(t, what() + ": piece " + std::to_string(i) + " read from origin hashes to " +
                      ev.sha256() + " but " + t.digest(i) +
                      " was reported before: the origin served different bytes, starting over");
        return;
    }
    p.bytes_from_origin += t.piece_bytes(i);
  } else {
    if (!t.digest_known(i) || t.digest(i) != ev.sha256()) {
      ++p.bad_reports;
      log()->warn(
          "{}: piece {} from parent {} reported with digest {} but the task's is '{}'; "
          "ignored",
          what(), i, ev.parent_host_id(), ev.sha256(), t.digest(i));
      return;
    }
    p.bytes_from_peers += t.piece_bytes(i);
  }
  if (t.add_finished(p, i)) {
    t.rescore.new_supply = true;
    check_parents_after_piece(t, p, i);
  }
  p.last_piece_at = now;
  reg_.traffic().record_piece(t.id(), p.host, host_id(ev.parent_host_id()), t.piece_bytes(i), now);
  if (t.source.current == p.host) t.source.last_progress = now;
}

void engine::on_piece_failed(task& t, peer& child, const v1::PieceFailed& ev) {
  metrics_.count(ev.reason());
  const host_id parent(ev.parent_host_id());
  if (parent.empty()) {
    log()->debug("task {} host {}: piece {} failed from origin: {}", t.id().str(),
                 child.host.str(), ev.index(), ev.message());
    return;
  }
  if (ev.reason() == v1::PieceFailed::DIGEST_MISMATCH) {
    child.blocked.insert(parent);
    log()->warn("task {} host {}: parent {} served piece {} with the wrong digest; blocked for "
                "this child",
                t.id().str(), child.host.str(), parent.str(), ev.index());
  }
  // UNAVAILABLE (a busy parent's 503, a piece not readable there yet) says
  // the parent is loaded, not broken: its free upload already counts in the
  // score. Counting it as a failure pushed the busiest parents out of every
  // child's set under load, so sets churned each second while the parents
  // kept serving.
  if (ev.reason() == v1::PieceFailed::UNAVAILABLE) return;
  if (peer* pp = t.find_peer(parent)) pp->record_failure(clock_.now(), eval_.options().failure_window);
  reschedule(t, child, false, choice_trigger::piece_failed);
}

void engine::on_source_finished(task& t, peer& p, const v1::SourceFinished& ev) {
  const std::string what = "task " + t.id().str() + " host " + p.host.str();
  if (!ev.verified()) {
    if (t.state() == task_state::sealed) {
      // The list was verified by another peer: this copy is the bad one.
      abort_stream(p.stream, v1::Abort::POISONED,
                   what + ": your copy hashes to " + ev.sha256() +
                       " but the task was verified: drop it and register again");
      remove_peer(t, p.host, "its copy failed verification", true);
      return;
    }
    poison(t, what + ": the whole blob hashes to " + ev.sha256() +
                  ", not the task's digest: every copy is dropped, starting over");
    return;
  }
  if (t.state() != task_state::running) return;
  if (!t.all_digests_known() || !p.finished.all()) {
    log()->warn("{}: SourceFinished with {}/{} pieces held and {}/{} digests known; not sealing",
                what, p.finished.count(), t.piece_count(), t.known().count(), t.piece_count());
    return;
  }
  seal(t, "host " + p.host.str() + " verified the whole blob");
}

void engine::on_done(task& t, peer& p) {
  p.mark_done();
  t.set_parents(p, {});  // it downloads no more: free its parents for others
  log()->info("task {} host {}: done ({} from origin, {} from peers)", t.id().str(),
              p.host.str(), p.bytes_from_origin, p.bytes_from_peers);
  // A daemon marks a download done only after the whole blob hashed to its
  // digest, so a complete copy with every digest known seals the task too
  // (this is also how a task is sealed again after a scheduler restart).
  if (t.state() == task_state::running && p.finished.all() && t.all_digests_known())
    seal(t, "host " + p.host.str() + " is done with every piece");
}

void engine::on_failed(task& t, peer& p, const v1::Failed& ev) {
  const bool was_source = t.source.current == p.host;
  const std::string zone = p.zone_key;
  const bool was_gateway = !zone.empty() && t.zone_gateway(zone) == &p;
  t.mark_failed(p);
  if (was_gateway) check_gateway(t, zone, p.host);
  t.set_parents(p, {});
  log()->warn("task {} host {}: failed{}: {}", t.id().str(), p.host.str(),
              was_source ? " as source" : "", ev.message());
  if (was_source && t.state() == task_state::running) {
    p.is_source = false;
    t.source.current.reset();
    t.source.excluded.insert(p.host);
    if (++t.source.failures >= opts_.max_source_failures) {
      drop_task(t, v1::Abort::NO_SOURCE,
                "task " + t.id().str() + ": " + std::to_string(t.source.failures) +
                    " source peers failed to read origin (last: host " + p.host.str() + ": " +
                    ev.message() + "): check the registry and the clients' credentials");
      return;
    }
  }
  const host_id h = p.host;
  ensure_source(t);  // its pieces no longer count as held
  reschedule_children_of(t, h);
}

// ---------------------------------------------------------------- source

void engine::ensure_source(task& t) {
  if (t.state() != task_state::running) return;
  bitmap missing = t.missing_everywhere();
  if (t.source.current) {
    peer* src = t.find_peer(*t.source.current);
    if (src != nullptr) {
      if (missing.count_and_not(src->origin_assigned) > 0) {
        src->origin_assigned = missing;
        log()->info("task {}: pieces were lost with a departed peer; source {} now reads {} pieces "
                    "from origin",
                    t.id().str(), src->host.str(), missing.count());
        emit(src->stream, from_origin_decision(missing));
      }
      return;
    }
    t.source.current.reset();
  }
  if (missing.none()) return;
  const auto mode = t.source.ever_elected ? election_mode::replacement : election_mode::initial;
  const std::string& oz = origin_zone_of(t);
  auto h = elect_source(reg_, t, mode, nullptr, oz);
  if (!h) {
    log()->debug("task {}: {} pieces missing everywhere and no peer can read origin yet",
                 t.id().str(), missing.count());
    return;
  }
  peer& p = *t.find_peer(*h);
  if (mode == election_mode::initial && !p.was_source) {
    const host* hh = reg_.host_of(p);
    if (hh != nullptr && wait_for_better_source(t, *hh, oz)) return;
  }
  make_source(t, p, missing);
}

const std::string& engine::origin_zone_of(const task& t) const {
  if (auto it = opts_.origin_zones.find(t.origin().registry()); it != opts_.origin_zones.end())
    return it->second;
  return opts_.origin_zone;
}

bool engine::wait_for_better_source(task& t, const host& best, const std::string& oz) {
  const time_point now = clock_.now();
  if (t.source.election_due && now >= *t.source.election_due) return false;
  const host_rank mine = source_host_rank(best, oz);
  const bool better_known =
      std::any_of(reg_.hosts().begin(), reg_.hosts().end(), [&](const auto& kv) {
        return kv.second.can_serve() && source_host_rank(kv.second, oz) > mine;
      });
  if (!better_known) return false;
  if (!t.source.election_due) {
    t.source.election_due = now + opts_.election_window;
    pending_elections_.insert(t.id());
    log()->info(
        "task {}: waiting up to {} ms for a peer in origin zone '{}' or faster than host "
        "{} to elect as source",
        t.id().str(),
        std::chrono::duration_cast<std::chrono::milliseconds>(opts_.election_window).count(), oz,
        best.id.str());
  }
  return true;
}

std::optional<time_point> engine::next_election() const {
  std::optional<time_point> due;
  for (const auto& id : pending_elections_) {
    const task* t = reg_.find_task(id);
    if (t == nullptr || !t->source.election_due) continue;
    if (!due || *t->source.election_due < *due) due = *t->source.election_due;
  }
  return due;
}

void engine::run_due_elections() {
  const time_point now = clock_.now();
  std::vector<task_id> due;
  for (const auto& id : pending_elections_) {
    const task* t = reg_.find_task(id);
    if (t == nullptr || t->source.current || !t->source.election_due ||
        now >= *t->source.election_due)
      due.push_back(id);
  }
  for (const auto& id : due) {
    if (task* t = reg_.find_task(id); t != nullptr && !t->source.current) ensure_source(*t);
    pending_elections_.erase(id);
  }
}

void engine::make_source(task& t, peer& p, const bitmap& missing) {
  p.is_source = true;
  p.origin_assigned = missing;
  t.source.current = p.host;
  t.source.ever_elected = true;
  t.source.last_progress = clock_.now();
  metrics_.source_elections.inc();
  const bool waited = pending_elections_.erase(t.id()) > 0;
  log()->info("task {}: host {} elected source; it reads {} of {} pieces from origin",
              t.id().str(), p.host.str(), missing.count(), t.piece_count());
  emit(p.stream, from_origin_decision(missing));
  reschedule(t, p, false);
  // Peers that registered during the wait have no parent yet.
  if (waited)
    for (auto& [h, q] : t.peers())
      if (&q != &p) reschedule(t, q, false);
}

void engine::check_stall(task& t) {
  if (t.state() != task_state::running || !t.source.current) return;
  const time_point now = clock_.now();
  if (now - t.source.last_progress <= opts_.source_stall_timeout) return;
  peer* old = t.find_peer(*t.source.current);
  if (old == nullptr) return;
  bitmap missing = t.missing_everywhere();
  if (missing.none()) return;
  auto h = elect_source(reg_, t, election_mode::replacement, &old->host);
  if (!h) {
    t.source.last_progress = now;
    log()->warn("task {}: source {} made no progress for {}s but no other peer can take over; "
                "keeping it",
                t.id().str(), old->host.str(), seconds(opts_.source_stall_timeout));
    return;
  }
  log()->warn("task {}: source {} stalled (no piece for {}s, {} pieces missing everywhere); "
              "host {} takes over",
              t.id().str(), old->host.str(), seconds(opts_.source_stall_timeout),
              missing.count(), h->str());
  old->is_source = false;
  old->origin_assigned = bitmap(t.piece_count());
  t.source.excluded.insert(old->host);
  t.source.current.reset();
  emit(old->stream, stop_from_origin_decision(
                        "task " + t.id().str() + ": you read no piece for " +
                        std::to_string(seconds(opts_.source_stall_timeout)) + "s; host " +
                        h->str() + " reads origin now: fetch what you lack from parents"));
  make_source(t, *t.find_peer(*h), missing);
  reschedule(t, *old, true);
}

// ---------------------------------------------------------------- parents

void engine::reschedule(task& t, peer& child, bool force, choice_trigger why) {
  child.rescore_queued = false;  // done now: a queued entry for it is skipped
  if (!child.needs_pieces()) return;
  metrics_.count(why);
  auto chosen = eval_.choose(reg_, t, child, clock_.now(), rng_);
  if (chosen.size() < eval_.options().parents_per_child && !child.short_listed) {
    child.short_listed = true;
    t.rescore.short_of_parents.push_back(child.host);
  }
  if (!force && same_set(chosen, child.parents)) return;
  t.set_parents(child, std::move(chosen));
  emit(child.stream, parents_decision(t, child.parents));
}

void engine::reschedule_children_of(task& t, const host_id& parent) {
  // The children index, not a walk of every peer: a departing parent costs
  // O(its children). Same order as the walk was (host id).
  for (const auto& h : t.children_of(parent))
    if (peer* q = t.find_peer(h)) reschedule(t, *q, false, choice_trigger::parent_gone);
}

v1::Decision engine::parents_decision(const task& t, const std::vector<host_id>& parents) const {
  v1::Decision d;
  auto* ps = d.mutable_parents();
  for (const auto& h : parents) {
    const peer* p = t.find_peer(h);
    const host* hh = p == nullptr ? nullptr : reg_.host_of(*p);
    if (p == nullptr || hh == nullptr) continue;
    auto* out = ps->add_parents();
    out->set_host_id(h.str());
    out->set_addr(hh->info.peer_addr());
    out->set_zone(hh->info.zone());
    out->set_seed(hh->info.seed());
    out->set_finished_bitmap(p->finished.to_bytes());
    out->set_source(t.state() == task_state::running && t.source.current == h);
  }
  return d;
}

// ---------------------------------------------------------------- removal

bool engine::remove_peer(task& t, host_id h, std::string_view why, bool repair) {
  const peer* gone = t.find_peer(h);
  if (gone == nullptr) return true;
  const bool was_source = t.source.current == h;
  const std::string zone = gone->zone_key;
  const bool was_gateway = !zone.empty() && t.zone_gateway(zone) == gone;
  log()->info("task {} host {}: peer removed ({})", t.id().str(), h.str(), why);
  reg_.erase_peer(t, h);
  ++t.rescore.changes;
  if (!repair) return true;
  if (t.peers().empty()) {
    log()->info("task {}: no peers left; forgotten", t.id().str());
    pending_digest_tasks_.erase(t.id());
    reg_.erase_task(t.id());
    return false;
  }
  if (was_source && t.state() == task_state::running)
    log()->info("task {}: source {} left; electing another", t.id().str(), h.str());
  ensure_source(t);
  reschedule_children_of(t, h);
  if (was_gateway) check_gateway(t, zone, h);
  return true;
}

// ---------------------------------------------------------------- re-scoring

void engine::queue_rescore(const task& t, peer& child, choice_trigger why) {
  if (child.rescore_queued || !child.needs_pieces()) return;
  child.rescore_queued = true;
  queue_.push_back({t.id(), child.host, why});
}

void engine::check_parents_after_piece(task& t, peer& child, std::uint32_t i) {
  if (child.rescore_queued || !child.needs_pieces()) return;
  for (const auto& h : child.parents) {
    const peer* p = t.find_peer(h);
    // A parent that did not hold i is as useful as before; a departed one
    // had its children re-scored when it left.
    if (p == nullptr || !p->finished.test(i)) continue;
    if (!eval_.is_candidate(reg_, t, child, *p)) {
      queue_rescore(t, child, choice_trigger::parent_useless);
      return;
    }
  }
}

void engine::check_gateway(task& t, const std::string& zone, const std::optional<host_id>& before) {
  const peer* now = t.zone_gateway(zone);
  if (now != nullptr && before && now->host == *before) return;
  // The new gateway may now fetch across zones, the old one no longer does.
  if (now != nullptr)
    if (peer* q = t.find_peer(now->host)) queue_rescore(t, *q, choice_trigger::gateway);
  if (before)
    if (peer* q = t.find_peer(*before)) queue_rescore(t, *q, choice_trigger::gateway);
}

void engine::queue_short_of_parents(task& t, const peer* newcomer) {
  std::vector<host_id> hosts;
  hosts.swap(t.rescore.short_of_parents);
  for (const auto& h : hosts) {
    peer* q = t.find_peer(h);
    if (q == nullptr || !q->short_listed) continue;
    // A peer in another zone is no parent for it: re-scoring it would only
    // cost (4 zones of 500 peers: 3 of 4 re-scores in a ramp, for nothing).
    if (newcomer != nullptr && !eval_.zone_allows(reg_, t, *q, *newcomer)) {
      t.rescore.short_of_parents.push_back(h);
      continue;
    }
    q->short_listed = false;
    if (q->parents.size() < eval_.options().parents_per_child)
      queue_rescore(t, *q, choice_trigger::short_of_parents);
  }
}

void engine::queue_full_pass(time_point now) {
  using secs = std::chrono::duration<double>;
  const double elapsed = last_maintain_ ? secs(now - *last_maintain_).count() : 0.0;
  last_maintain_ = now;
  auto& tasks = reg_.tasks();
  const auto peers = static_cast<double>(reg_.peer_count());
  if (tasks.empty() || peers == 0) {
    full_pass_credit_ = 0;
    return;
  }
  const double period = std::max(secs(opts_.full_pass_period).count(), 1e-3);
  const double rate = std::max(peers / period, opts_.full_pass_min_rate);
  // At most one pass's worth waits: a stalled owner does not owe a burst.
  full_pass_credit_ = std::min(full_pass_credit_ + std::max(elapsed, 0.0) * rate, peers);

  auto it = tasks.lower_bound(full_pass_task_);
  if (it == tasks.end() || it->first != full_pass_task_) full_pass_host_.reset();
  // Each task at most once per call, so idle tasks do not make it spin.
  for (std::size_t seen = 0; full_pass_credit_ >= 1 && seen <= tasks.size(); ++seen) {
    if (it == tasks.end()) {
      it = tasks.begin();
      full_pass_host_.reset();
    }
    task& t = it->second;
    auto& ps = t.peers();
    auto pit = ps.begin();
    if (full_pass_host_) {
      pit = ps.upper_bound(*full_pass_host_);
    } else if (t.rescore.changes == t.rescore.changes_at_full_pass) {
      pit = ps.end();  // idle since the pass last went through it: nothing to gain
    } else {
      t.rescore.changes_at_full_pass = t.rescore.changes;
    }
    for (; pit != ps.end() && full_pass_credit_ >= 1; ++pit) {
      full_pass_credit_ -= 1;
      full_pass_host_ = pit->first;
      queue_rescore(t, pit->second, choice_trigger::full_pass);
    }
    full_pass_task_ = it->first;
    if (pit != ps.end()) return;  // the credit ran out inside this task
    full_pass_host_.reset();
    ++it;
    if (it != tasks.end()) full_pass_task_ = it->first;
  }
  if (it == tasks.end()) {
    full_pass_task_ = task_id();
    full_pass_host_.reset();
  }
}

void engine::remove_host(const host_id& h, v1::Abort::Reason reason, const std::string& message) {
  host* hh = reg_.find_host(h);
  if (hh == nullptr) return;
  const std::vector<task_id> tasks(hh->tasks.begin(), hh->tasks.end());
  for (const auto& tid : tasks) {
    task* t = reg_.find_task(tid);
    if (t == nullptr) continue;
    peer* p = t->find_peer(h);
    if (p == nullptr) continue;
    abort_stream(p->stream, reason, message);
    remove_peer(*t, h, message, true);
  }
  reg_.erase_host(h);
  log()->info("host {} removed: {}", h.str(), message);
}

void engine::abort_stream(stream_id s, v1::Abort::Reason reason, const std::string& message) {
  v1::Decision d;
  d.mutable_abort()->set_reason(reason);
  d.mutable_abort()->set_message(message);
  if (reason == v1::Abort::INVALID) log()->warn("aborting a stream: {}", message);
  emit(s, std::move(d));
  sink_.close(s);
}

void engine::drop_task(task& t, v1::Abort::Reason reason, const std::string& message) {
  for (const auto& [h, p] : t.peers()) abort_stream(p.stream, reason, message);
  const task_id id = t.id();
  pending_digest_tasks_.erase(id);
  reg_.erase_task(id);
}

void engine::poison(task& t, const std::string& message) {
  t.poison();
  metrics_.poisoned_tasks.inc();
  log()->error("task {} poisoned: {}", t.id().str(), message);
  drop_task(t, v1::Abort::POISONED, message);
}

void engine::seal(task& t, std::string_view why) {
  if (!t.seal()) return;
  log()->info("task {} sealed: {}", t.id().str(), why);
  flush_task_digests(t, true);
}

void engine::leave_host(const host_id& h) {
  remove_host(h, v1::Abort::HOST_GONE, "host " + h.str() + " left");
  update_gauges();
}

// ---------------------------------------------------------------- digests

void engine::queue_digest(task& t, std::uint32_t index, stream_id reporter) {
  t.pending_digests.push_back({index, reporter});
  if (!t.pending_since) t.pending_since = clock_.now();
  pending_digest_tasks_.insert(t.id());
  if (t.pending_digests.size() >= opts_.digest_batch_size) flush_task_digests(t, false);
}

void engine::flush_task_digests(task& t, bool sealed) {
  for (const auto& [h, q] : t.peers()) {
    v1::Decision d;
    auto* m = d.mutable_digests();
    for (const auto& pd : t.pending_digests) {
      if (pd.reporter == q.stream) continue;
      auto* e = m->add_digests();
      e->set_index(pd.index);
      e->set_sha256(t.digest(pd.index));
    }
    m->set_sealed(sealed);
    if (m->digests_size() > 0 || sealed) emit(q.stream, std::move(d));
  }
  t.pending_digests.clear();
  t.pending_since.reset();
  pending_digest_tasks_.erase(t.id());
}

void engine::flush_digests() { flush_digests_due_by(time_point::max()); }

void engine::flush_due_digests() { flush_digests_due_by(clock_.now()); }

void engine::flush_digests_due_by(time_point by) {
  const std::vector<task_id> ids(pending_digest_tasks_.begin(), pending_digest_tasks_.end());
  for (const auto& id : ids) {
    task* t = reg_.find_task(id);
    if (t == nullptr) {
      pending_digest_tasks_.erase(id);
    } else if (!t->pending_since || *t->pending_since + digest_delay(*t) <= by) {
      flush_task_digests(*t, false);
    }
  }
}

duration engine::digest_delay(const task& t) const {
  const std::size_t per = std::max<std::size_t>(opts_.digest_batch_peers, 1);
  const auto scale = static_cast<std::int64_t>((t.peers().size() + per - 1) / per);
  return std::min(opts_.digest_batch_delay * std::max<std::int64_t>(scale, 1),
                  std::max(opts_.digest_batch_delay, opts_.digest_batch_delay_max));
}

std::optional<time_point> engine::next_digest_flush() const {
  std::optional<time_point> due;
  for (const auto& id : pending_digest_tasks_) {
    const task* t = reg_.find_task(id);
    if (t == nullptr || !t->pending_since) continue;
    const time_point at = *t->pending_since + digest_delay(*t);
    if (!due || at < *due) due = at;
  }
  return due;
}

// ---------------------------------------------------------------- time

void engine::tick() {
  maintain();
  while (sweep(SIZE_MAX)) {
  }
}

void engine::maintain() {
  const time_point now = clock_.now();
  for (const auto& h : reg_.expired_hosts(now, opts_.host_ttl)) {
    remove_host(h, v1::Abort::HOST_GONE,
                "host " + h.str() + " sent no AnnounceHost for " +
                    std::to_string(seconds(opts_.host_ttl)) +
                    "s (--host-ttl): announce again and register again");
  }
  std::vector<task_id> ids;
  ids.reserve(reg_.tasks().size());
  for (const auto& [id, t] : reg_.tasks()) ids.push_back(id);
  for (const auto& id : ids) {
    task* t = reg_.find_task(id);
    if (t == nullptr) continue;
    check_stall(*t);
    ensure_source(*t);
    // A new source is something to fetch from, like a peer's new pieces.
    if (t->rescore.source_seen != t->source.current) {
      t->rescore.source_seen = t->source.current;
      t->rescore.new_supply = true;
    }
    if (t->rescore.new_supply) {
      t->rescore.new_supply = false;
      queue_short_of_parents(*t);
    }
  }
  update_gauges();
  // Re-scoring every child scores up to candidate_limit parents for each, and
  // on 25,000 peers a continuous sweep over all of them took up to half of
  // the owner thread: children are re-scored when something changed for them
  // (queued by the events), and only a slow full pass goes over the rest.
  // Either way the work runs in slices (sweep()), and a queue still going
  // when the next tick comes carries on.
  queue_full_pass(now);
}

bool engine::sweep(std::size_t budget) {
  for (std::size_t done = 0; queue_next_ < queue_.size() && done < budget; ++queue_next_) {
    const queued_rescore& e = queue_[queue_next_];
    task* t = reg_.find_task(e.task);
    if (t == nullptr) continue;
    peer* q = t->find_peer(e.host);
    // Gone, or re-scored since it was queued.
    if (q == nullptr || !q->rescore_queued) continue;
    reschedule(*t, *q, false, e.why);
    ++done;
  }
  if (queue_next_ < queue_.size()) return true;
  queue_.clear();
  queue_next_ = 0;
  return false;
}

// ---------------------------------------------------------------- unary

result<v1::AnnounceHostResponse> engine::announce_host(const v1::Host& h) {
  if (h.id().empty()) return error(errc::invalid_argument, "AnnounceHost without host.id");
  const host* before = reg_.find_host(host_id(h.id()));
  const bool known = before != nullptr;
  const bool new_addr = before == nullptr || before->info.peer_addr() != h.peer_addr();
  const host& hh = reg_.announce(h, clock_.now());
  // Peers registered before their host's address was known could not be
  // anyone's parent: now they can.
  if (new_addr && hh.can_serve()) {
    for (const auto& tid : hh.tasks) {
      if (task* t = reg_.find_task(tid)) {
        t->rescore.new_supply = true;
        ++t->rescore.changes;
      }
    }
  }
  if (!known)
    log()->info("host {} announced: addr {} zone '{}' seed={}", h.id(), h.peer_addr(), h.zone(),
                h.seed());
  update_gauges();
  v1::AnnounceHostResponse resp;
  resp.set_announce_interval_seconds(opts_.announce_interval_seconds);
  return resp;
}

result<v1::TaskInfo> engine::stat_task(const task_id& id) const {
  const task* t = reg_.find_task(id);
  if (t == nullptr)
    return error(errc::not_found,
                 "task " + id.str() + " is not known to this scheduler (no peer has it registered)");
  return task_info(*t);
}

v1::TaskInfo engine::task_info(const task& t) const {
  const time_point now = clock_.now();
  v1::TaskInfo info;
  info.set_task_id(t.id().str());
  info.set_content_length(t.content_length());
  info.set_piece_length(t.piece_length());
  info.set_piece_count(t.piece_count());
  info.set_state(std::string(to_string(t.state())));
  *info.mutable_origin() = t.origin();
  info.set_digests_known(t.known().count());
  info.set_created_unix_ms(clock_.unix_ms(t.created()));
  for (const auto& [h, p] : t.peers()) {
    auto* pi = info.add_peers();
    pi->set_host_id(h.str());
    pi->set_state(std::string(to_string(p.state)));
    pi->set_finished_pieces(p.finished.count());
    pi->set_source(p.is_source);
    for (const auto& parent : p.parents) pi->add_parent_host_ids(parent.str());
    pi->set_bytes_from_origin(p.bytes_from_origin);
    pi->set_bytes_from_peers(p.bytes_from_peers);
    pi->set_failures(p.recent_failures(now, eval_.options().failure_window));
  }
  return info;
}

v1::ListHostsResponse engine::list_hosts() const {
  v1::ListHostsResponse out;
  for (const auto& [id, h] : reg_.hosts()) {
    *out.add_hosts() = h.info;
    out.add_last_seen_unix_ms(clock_.unix_ms(h.last_seen));
  }
  return out;
}

v1::ListTasksResponse engine::list_tasks() const {
  v1::ListTasksResponse out;
  for (const auto& [id, t] : reg_.tasks()) *out.add_tasks() = task_info(t);
  return out;
}

// ---------------------------------------------------------------- plumbing

void engine::emit(stream_id s, v1::Decision d) {
  metrics_.count(d);
  sink_.send(s, std::move(d));
}

void engine::update_gauges() {
  metrics_.hosts.set(static_cast<double>(reg_.hosts().size()));
  metrics_.tasks.set(static_cast<double>(reg_.tasks().size()));
  metrics_.peers.set(static_cast<double>(reg_.peer_count()));
}

}  // namespace shoal::scheduler
