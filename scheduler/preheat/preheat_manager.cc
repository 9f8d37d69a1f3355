#include "scheduler/preheat/preheat_manager.h"

#include <spdlog/fmt/fmt.h>

#include <algorithm>

#include "common/log.h"
#include "common/reference.h"

namespace shoal::scheduler {
namespace {

std::shared_ptr<spdlog::logger> log() {
  static auto l = shoal::logger("preheat");
  return l;
}

bool terminal(const std::string& state) { return state == "succeeded" || state == "failed"; }

constexpr std::size_t kMaxReferenceLength = 1024;
constexpr std::size_t kMaxErrorLength = 1024;

}  // namespace

preheat_manager::preheat_manager(preheat_options opts, const engine& eng, const clock& clk,
                                 std::uint64_t seed)
    : opts_(opts), engine_(eng), clock_(clk), rng_(seed) {}

result<v1::PreheatJob> preheat_manager::start(const v1::PreheatRequest& req) {
  if (req.reference().size() > kMaxReferenceLength)
    return error(errc::invalid_argument, "preheat: reference is longer than 1024 characters");
  auto ref = parse_reference(req.reference());
  if (!ref)
    return error(errc::invalid_argument,
                 "preheat: \"" + req.reference() + "\" is not an image reference (" +
                     ref.error().message + "); use registry/repository:tag or @sha256:<digest>");
  const time_point now = clock_.now();
  std::vector<std::string> seeds;
  for (const auto& [id, h] : engine_.state().hosts()) {
    if (h.announced && h.info.seed() && !h.expired(now, engine_.options().host_ttl))
      seeds.push_back(id.str());
  }
  if (seeds.empty())
    return error(errc::unsupported,
                 "preheat " + req.reference() +
                     ": no seed host is online (start shoald with --seed and --scheduler "
                     "pointing at this scheduler, then try again)");
  job j;
  j.info.set_id(fmt::format("{:016x}", rng_()));
  j.info.set_reference(ref->str());
  j.info.set_state("pending");
  j.info.set_created_unix_ms(clock_.unix_ms(now));
  j.authorization = req.authorization();
  for (const auto& s : seeds) {
    seed_state st;
    st.info.set_host_id(s);
    st.info.set_state("pending");
    st.info.set_updated_unix_ms(clock_.unix_ms(now));
    st.last_heard = now;
    j.seeds.emplace(s, std::move(st));
  }
  const std::string id = j.info.id();
  log()->info("preheat {} of {} started on {} seed(s)", id, j.info.reference(), seeds.size());
  jobs_.emplace(id, std::move(j));
  order_.push_back(id);
  trim();
  return render(jobs_.at(id));
}

result<v1::PreheatJob> preheat_manager::get(const std::string& id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end())
    return error(errc::not_found, "preheat job " + id +
                                      " is not known to this scheduler (wrong id, dropped, or "
                                      "the scheduler restarted: start it again)");
  return render(it->second);
}

v1::ListPreheatsResponse preheat_manager::list() const {
  v1::ListPreheatsResponse out;
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    auto j = jobs_.find(*it);
    if (j != jobs_.end()) *out.add_jobs() = render(j->second);
  }
  return out;
}

void preheat_manager::assignments(const std::string& host, v1::AnnounceHostResponse& resp) const {
  for (const auto& id : order_) {
    const auto& j = jobs_.at(id);
    auto s = j.seeds.find(host);
    if (s == j.seeds.end() || terminal(s->second.info.state())) continue;
    auto* a = resp.add_preheats();
    a->set_job_id(j.info.id());
    a->set_reference(j.info.reference());
    a->set_authorization(j.authorization);
  }
}

bool preheat_manager::report(const v1::PreheatReport& r) {
  auto it = jobs_.find(r.job_id());
  if (it == jobs_.end()) return false;
  job& j = it->second;
  auto s = j.seeds.find(r.host_id());
  if (s == j.seeds.end()) return false;
  seed_state& st = s->second;
  if (terminal(st.info.state())) return true;  // late report after a timeout: keep the verdict
  const std::string& state = r.state();
  if (state != "running" && state != "succeeded" && state != "failed") return true;
  const time_point now = clock_.now();
  st.last_heard = now;
  st.info.set_state(state);
  st.info.set_blobs_total(r.blobs_total());
  st.info.set_blobs_done(std::min(r.blobs_done(), r.blobs_total()));
  st.info.set_bytes_total(r.bytes_total());
  st.info.set_bytes_done(std::min(r.bytes_done(), r.bytes_total()));
  st.info.set_error(r.error().substr(0, kMaxErrorLength));
  st.info.set_updated_unix_ms(clock_.unix_ms(now));
  if (j.info.manifest_digest().empty() && !r.manifest_digest().empty())
    j.info.set_manifest_digest(r.manifest_digest().substr(0, 100));
  if (state == "failed")
    log()->warn("preheat {} of {}: seed {} failed: {}", j.info.id(), j.info.reference(),
                r.host_id(), st.info.error());
  if (state == "succeeded")
    log()->info("preheat {} of {}: seed {} holds all {} blobs ({} bytes)", j.info.id(),
                j.info.reference(), r.host_id(), r.blobs_total(), r.bytes_total());
  settle(j);
  return true;
}

void preheat_manager::tick() {
  const time_point now = clock_.now();
  for (auto& [id, j] : jobs_) {
    if (terminal(j.info.state())) continue;
    bool changed = false;
    for (auto& [host, st] : j.seeds) {
      if (terminal(st.info.state())) continue;
      std::string why;
      if (engine_.state().find_host(host_id(host)) == nullptr)
        why = "seed host " + host + " left or expired before finishing";
      else if (now - st.last_heard > opts_.seed_timeout)
        why = fmt::format(
            "seed host {} sent no progress for {}s (is its shoald older than preheat, or stuck? "
            "see its log)",
            host, std::chrono::duration_cast<std::chrono::seconds>(opts_.seed_timeout).count());
      if (why.empty()) continue;
      st.info.set_state("failed");
      st.info.set_error(why);
      st.info.set_updated_unix_ms(clock_.unix_ms(now));
      log()->warn("preheat {} of {}: {}", id, j.info.reference(), why);
      changed = true;
    }
    if (changed) settle(j);
  }
}

void preheat_manager::settle(job& j) {
  bool all_done = true;
  bool any_started = false;
  std::string errors;
  for (const auto& [host, st] : j.seeds) {
    const auto& state = st.info.state();
    if (!terminal(state)) all_done = false;
    if (state != "pending") any_started = true;
    if (state == "failed") {
      if (!errors.empty()) errors += "; ";
      errors += host + ": " + st.info.error();
    }
  }
  if (!all_done) {
    j.info.set_state(any_started ? "running" : "pending");
    return;
  }
  j.info.set_state(errors.empty() ? "succeeded" : "failed");
  j.info.set_error(errors);
  j.info.set_finished_unix_ms(clock_.unix_ms(clock_.now()));
  log()->info("preheat {} of {} {}", j.info.id(), j.info.reference(), j.info.state());
}

v1::PreheatJob preheat_manager::render(const job& j) const {
  v1::PreheatJob out = j.info;
  std::uint64_t done = 0;
  for (const auto& [host, st] : j.seeds) {
    *out.add_seeds() = st.info;
    out.set_blobs_total(std::max(out.blobs_total(), st.info.blobs_total()));
    out.set_bytes_total(std::max(out.bytes_total(), st.info.bytes_total()));
    done += st.info.bytes_done();
  }
  out.set_bytes_done(done);
  return out;
}

void preheat_manager::trim() {
  // Drop the oldest finished jobs beyond max_jobs; running ones are kept.
  for (auto it = order_.begin(); jobs_.size() > opts_.max_jobs && it != order_.end();) {
    auto j = jobs_.find(*it);
    if (j != jobs_.end() && terminal(j->second.info.state())) {
      jobs_.erase(j);
      it = order_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace shoal::scheduler
