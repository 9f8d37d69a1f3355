#include "daemon/api/pulls.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <random>

#include "common/log.h"
#include "common/reference.h"
#include "common/sha256.h"
#include "daemon/api/router.h"
#include "daemon/model/layout.h"

namespace shoal::api {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using asio::awaitable;
using asio::use_awaitable;

namespace {
auto log() { return logger("api"); }

constexpr std::string_view kManifestAccept =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";

std::string new_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string id = "p";
  auto v = rng();
  for (int i = 0; i < 12; ++i) id += hex[(v >> (i * 4)) & 0xf];
  return id;
}

std::string iso_time(std::chrono::system_clock::time_point t) {
  if (t.time_since_epoch().count() == 0) return {};
  auto secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}
}  // namespace

const char* state_name(pull_state s) {
  switch (s) {
    case pull_state::resolving: return "resolving";
    case pull_state::downloading: return "downloading";
    case pull_state::laying_out: return "laying_out";
    case pull_state::done: return "done";
    case pull_state::failed: return "failed";
    case pull_state::cancelled: return "cancelled";
  }
  return "?";
}

result<pull_request> parse_pull_request(std::string_view body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object())
    return error(errc::invalid_argument,
                 "request body must be a JSON object {\"reference\":..., \"output_dir\":...}");
  const auto& o = v.as_object();
  pull_request r;
  auto str = [&](const char* k, std::string& out, bool required) -> result<void> {
    auto* x = o.if_contains(k);
    if (!x) {
      if (required) return error(errc::invalid_argument, std::string("missing \"") + k + "\"");
      return ok();
    }
    if (!x->is_string()) return error(errc::invalid_argument, std::string("\"") + k + "\" must be a string");
    out = std::string(x->as_string());
    return ok();
  };
  auto list = [&](const char* k, std::vector<std::string>& out) -> result<void> {
    auto* x = o.if_contains(k);
    if (!x || x->is_null()) return ok();
    if (!x->is_array())
      return error(errc::invalid_argument, std::string("\"") + k + "\" must be an array of globs");
    for (const auto& e : x->as_array()) {
      if (!e.is_string())
        return error(errc::invalid_argument, std::string("\"") + k + "\" must hold strings");
      out.emplace_back(e.as_string());
    }
    return ok();
  };
  for (const auto& [k, val] : o) {
    if (k != "reference" && k != "output_dir" && k != "include" && k != "exclude" &&
        k != "authorization")
      return error(errc::invalid_argument, "unknown field \"" + std::string(k) + "\"");
  }
  if (auto x = str("reference", r.reference, true); !x) return std::move(x).error();
  if (auto x = str("output_dir", r.output_dir, true); !x) return std::move(x).error();
  if (auto x = str("authorization", r.authorization, false); !x) return std::move(x).error();
  if (auto x = list("include", r.include); !x) return std::move(x).error();
  if (auto x = list("exclude", r.exclude); !x) return std::move(x).error();
  if (auto ref = parse_reference(r.reference); !ref)
    return error(errc::invalid_argument, "reference '" + r.reference + "': " + ref.error().message);
  if (r.output_dir.empty() || r.output_dir.front() != '/')
    return error(errc::invalid_argument,
                 "output_dir '" + r.output_dir + "' must be an absolute path");
  if (r.output_dir.size() > 4096) return error(errc::invalid_argument, "output_dir is too long");
  r.output_dir = fs::path(r.output_dir).lexically_normal().string();
  while (r.output_dir.size() > 1 && r.output_dir.back() == '/') r.output_dir.pop_back();
  if (r.output_dir == "/") return error(errc::invalid_argument, "output_dir may not be '/'");
  if (auto f = model::path_filter::make(r.include, r.exclude); !f) return std::move(f).error();
  return r;
}

// ---- pull_job --------------------------------------------------------------

pull_job::pull_job(asio::any_io_executor ex, std::string id, pull_request req)
    : id_(std::move(id)), req_(std::move(req)), started_(std::chrono::system_clock::now()), ex_(ex) {}

void pull_job::changed() {
  ++version_;
  for (auto* t : watchers_) t->cancel();
}

void pull_job::set_state(pull_state s) {
  state_ = s;
  if (terminal(s)) finished_ = std::chrono::system_clock::now();
  changed();
}

awaitable<void> pull_job::wait_change(std::chrono::steady_clock::time_point deadline) {
  asio::steady_timer timer(ex_, deadline);
  watchers_.push_back(&timer);
  auto [ec] = co_await timer.async_wait(asio::as_tuple(use_awaitable));
  (void)ec;
  std::erase(watchers_, &timer);
}

std::uint64_t pull_job::bytes_total() const {
  std::uint64_t n = 0;
  for (const auto& l : layers_) n += l.desc.size;
  return n;
}

std::uint64_t pull_job::bytes_done() const {
  std::uint64_t n = 0;
  for (const auto& l : layers_) n += l.bytes_done;
  return n;
}

json::object pull_job::to_json() const {
  json::object o;
  o["id"] = id_;
  o["reference"] = req_.reference;
  o["output_dir"] = req_.output_dir;
  o["include"] = strings(req_.include);
  o["exclude"] = strings(req_.exclude);
  o["state"] = state_name(state_);
  o["manifest_digest"] = manifest_digest_;
  o["noop"] = noop_;
  o["bytes_total"] = bytes_total();
  o["bytes_done"] = bytes_done();
  json::array layers;
  for (const auto& l : layers_) {
    json::object lo;
    lo["digest"] = l.desc.blob.str();
    lo["media_type"] = l.desc.media_type;
    lo["path"] = l.desc.path;
    lo["format"] = model::format_name(l.desc.format);
    lo["size"] = l.desc.size;
    lo["bytes_done"] = l.bytes_done;
    lo["complete"] = l.complete;
    lo["cached"] = l.cached;
    layers.push_back(std::move(lo));
  }
  o["layers"] = std::move(layers);
  json::object files;
  files["files"] = files_;
  files["linked"] = linked_;
  files["copied"] = copied_;
  files["extracted_layers"] = extracted_;
  o["layout"] = std::move(files);
  o["started_at"] = iso_time(started_);
  if (terminal(state_)) o["finished_at"] = iso_time(finished_);
  if (error_) {
    json::object e;
    auto [st, code] = status_for(*error_);
    (void)st;
    e["code"] = code;
    e["message"] = error_->message;
    o["error"] = std::move(e);
  }
  return o;
}

// ---- pull_manager ----------------------------------------------------------

pull_manager::pull_manager(asio::any_io_executor ex, source::registry_client& origin,
                           transfer::task_manager& tasks, storage::store& store,
                           fs::path cache_dir, metrics::registry& reg, pull_options opts)
    : ex_(ex),
      origin_(origin),
      tasks_(tasks),
      store_(store),
      cache_dir_(std::move(cache_dir)),
      opts_(opts),
      pulls_total_(reg.add_counter("shoal_api_pulls_total",
                                   "Model pulls finished, by result (done, noop, failed, cancelled)",
                                   {"result"})),
      pulls_active_(reg.add_gauge("shoal_api_pulls_active", "Model pulls running now").with()) {}

pull_manager::~pull_manager() {
  stop();
  blocking_.join();
}

void pull_manager::stop() {
  stopped_ = true;
  for (auto& j : active_) {
    j->cancelled_ = true;
    j->changed();
  }
}

std::size_t pull_manager::active() const { return active_.size(); }

result<std::shared_ptr<pull_job>> pull_manager::start(pull_request req, bool* attached) {
  *attached = false;
  if (stopped_) return error(errc::cancelled, "shoald is shutting down");
  for (auto& j : active_) {
    if (j->req_.output_dir != req.output_dir) continue;
    if (j->req_.reference == req.reference && j->req_.include == req.include &&
        j->req_.exclude == req.exclude && !j->cancelled_) {
      *attached = true;
      return j;
    }
    return error(errc::busy, "pull " + j->id_ + " of " + j->req_.reference + " into " +
                                 req.output_dir +
                                 " is running (wait for it or cancel it: DELETE /v1/pulls/" +
                                 j->id_ + ")");
  }
  if (active_.size() >= opts_.max_active)
    return error(errc::too_large, std::to_string(active_.size()) +
                                      " pulls are running (the limit); retry when one ends");
  auto job = std::make_shared<pull_job>(ex_, new_id(), std::move(req));
  active_.push_back(job);
  pulls_active_.set(static_cast<double>(active_.size()));
  log()->info("pull {}: {} -> {}", job->id_, job->req_.reference, job->req_.output_dir);
  asio::co_spawn(ex_, run(job), asio::detached);
  return job;
}

std::shared_ptr<pull_job> pull_manager::find(const std::string& id) const {
  for (const auto& j : active_)
    if (j->id_ == id) return j;
  for (const auto& j : finished_)
    if (j->id_ == id) return j;
  return nullptr;
}

std::vector<std::shared_ptr<pull_job>> pull_manager::list() const {
  std::vector<std::shared_ptr<pull_job>> out(active_.rbegin(), active_.rend());
  out.insert(out.end(), finished_.begin(), finished_.end());
  return out;
}

result<void> pull_manager::cancel(const std::string& id) {
  for (auto& j : active_)
    if (j->id_ == id) {
      j->cancelled_ = true;
      j->changed();
      return ok();
    }
  if (find(id)) return ok();  // already finished: nothing to do
  return error(errc::not_found, "no pull with id '" + id + "'");
}

void pull_manager::finish(const std::shared_ptr<pull_job>& job, std::optional<error> err) {
  const char* result;
  if (err && (err->is(errc::cancelled) || job->cancelled_)) {
    job->error_ = error(errc::cancelled, "the pull was cancelled");
    job->set_state(pull_state::cancelled);
    result = "cancelled";
  } else if (err) {
    job->error_ = std::move(err);
    job->set_state(pull_state::failed);
    result = "failed";
  } else {
    job->set_state(pull_state::done);
    result = job->noop_ ? "noop" : "done";
  }
  pulls_total_.with({result}).inc();
  if (job->error_)
    log()->warn("pull {}: {} ({})", job->id_, state_name(job->state_), job->error_->message);
  else
    log()->info("pull {}: {} {} files in {}", job->id_, job->noop_ ? "up to date," : "done,",
                job->files_, job->req_.output_dir);
  std::erase(active_, job);
  pulls_active_.set(static_cast<double>(active_.size()));
  finished_.push_front(job);
  while (finished_.size() > opts_.keep_finished) finished_.pop_back();
}

awaitable<result<void>> pull_manager::resolve(std::shared_ptr<pull_job> job,
                                              source::request_target target) {
  auto ref = parse_reference(job->req_.reference);
  if (!ref) co_return std::move(ref).error();
  auto res = co_await origin_.manifest(target, ref->ref(), std::string(kManifestAccept), false,
                                       opts_.manifest_limit);
  if (!res) co_return std::move(res).error();
  const std::string where = ref->registry + "/" + ref->repository + ":" + ref->ref();
  if (res->status == 401)
    co_return error(errc::unauthorized,
                    "manifest " + where + ": the registry answered 401 (pass credentials in "
                    "\"authorization\")");
  if (res->status == 404)
    co_return error(errc::not_found, "manifest " + where + ": not found in the registry");
  if (res->status / 100 != 2)
    co_return error(errc::upstream_error,
                    "manifest " + where + ": the registry answered " + std::to_string(res->status));
  std::string got = "sha256:" + sha256_hex(res->body);
  if (!ref->digest.empty() && got != ref->digest)
    co_return error(errc::digest_mismatch, "manifest " + where + " hashes to " + got);
  auto m = model::parse_manifest(res->body);
  if (!m) co_return error(m.error().code, where + ": " + m.error().message);
  if (auto d = parse_digest(got); d) {
    if (auto put = store_.put_manifest(d->hex, {res->content_type, res->body}); !put)
      log()->warn("caching manifest {}: {}", got, put.error().describe());
  }
  auto filter = model::path_filter::make(job->req_.include, job->req_.exclude);
  if (!filter) co_return std::move(filter).error();
  job->manifest_digest_ = got;
  job->media_type_ = res->content_type;
  for (const auto& l : m->layers) {
    if (l.format == model::layer_format::raw && l.path.empty())
      co_return error(errc::invalid_argument,
                      "layer " + l.blob.str() + " (" + l.media_type +
                          ") is a raw layer without a file path annotation (" +
                          std::string(model::kFilepath) + " or " + std::string(model::kTitle) +
                          "): cannot tell where its file goes");
    bool selected = l.path.empty() ? job->req_.include.empty() : filter->selects(l.path);
    if (!selected) continue;
    layer_progress p;
    p.desc = l;
    job->layers_.push_back(std::move(p));
  }
  if (job->layers_.empty())
    co_return error(errc::invalid_argument,
                    "no layer of " + where + " matches the include/exclude filters");
  job->changed();
  co_return ok();
}

awaitable<void> pull_manager::download_worker(std::shared_ptr<pull_job> job,
                                              source::request_target target,
                                              std::shared_ptr<std::size_t> next,
                                              std::shared_ptr<std::optional<error>> failure,
                                              std::shared_ptr<std::size_t> running) {
  while (*next < job->layers_.size() && !*failure && !job->cancelled_) {
    const std::size_t i = (*next)++;
    auto& lp = job->layers_[i];
    bool hit = false;
    auto acquired = tasks_.acquire(lp.desc.blob, lp.desc.size, target, &hit);
    if (!acquired) {
      *failure = error(acquired.error().code,
                       "layer " + lp.desc.blob.str() + ": " + acquired.error().message);
      break;
    }
    auto t = std::move(*acquired);
    lp.cached = hit;
    while (t->current() == transfer::task::state::downloading && !job->cancelled_ && !*failure) {
      std::uint64_t done = 0;
      const auto pl = t->piece_length();
      for (std::uint32_t n = 0; n < t->piece_count(); ++n)
        if (t->readable(n)) done += std::min<std::uint64_t>(pl, lp.desc.size - std::uint64_t{n} * pl);
      if (done != lp.bytes_done) {
        lp.bytes_done = done;
        job->changed();
      }
      co_await t->wait_change(std::chrono::steady_clock::now() + std::chrono::milliseconds(250));
    }
    if (job->cancelled_ || *failure) break;
    if (t->current() == transfer::task::state::failed) {
      auto w = co_await t->wait_piece(0);
      std::string why = w ? "download failed" : w.error().message;
      *failure = error(w ? errc::upstream_error : w.error().code,
                       "layer " + lp.desc.blob.str() + ": " + why);
      break;
    }
    lp.bytes_done = lp.desc.size;
    lp.complete = true;
    job->changed();
  }
  --*running;
  job->changed();
}

awaitable<result<void>> pull_manager::download(std::shared_ptr<pull_job> job,
                                               source::request_target target) {
  auto next = std::make_shared<std::size_t>(0);
  auto failure = std::make_shared<std::optional<error>>();
  auto running = std::make_shared<std::size_t>(0);
  const std::size_t workers = std::min(opts_.parallel_layers, job->layers_.size());
  for (std::size_t w = 0; w < workers; ++w) {
    ++*running;
    asio::co_spawn(ex_, download_worker(job, target, next, failure, running), asio::detached);
  }
  while (*running > 0)
    co_await job->wait_change(std::chrono::steady_clock::now() + std::chrono::seconds(1));
  if (*failure) co_return std::move(**failure);
  if (job->cancelled_) co_return error(errc::cancelled, "the pull was cancelled");
  co_return ok();
}

namespace {
// Runs the layout on the blocking pool (a coroutine spawned there).
awaitable<result<model::layout_stats>> layout_on_pool(fs::path dir,
                                                      std::vector<model::placed_layer> layers,
                                                      model::marker m,
                                                      std::shared_ptr<pull_job> job_alive,
                                                      const std::atomic<bool>* cancelled) {
  (void)job_alive;  // keeps the cancel flag alive
  co_return model::lay_out(dir, layers, m, cancelled);
}
}  // namespace

awaitable<void> pull_manager::run(std::shared_ptr<pull_job> job) {
  auto ref = parse_reference(job->req_.reference);
  source::request_target target{ref->registry, ref->repository, job->req_.authorization};
  const fs::path dir(job->req_.output_dir);

  if (auto r = co_await resolve(job, target); !r) {
    finish(job, std::move(r).error());
    co_return;
  }
  if (job->cancelled_) {
    finish(job, error(errc::cancelled, "cancelled"));
    co_return;
  }
  model::marker want{job->manifest_digest_, job->req_.reference, job->req_.include,
                     job->req_.exclude};
  if (auto have = model::read_marker(dir); have && model::same_content(*have, want)) {
    job->noop_ = true;
    for (auto& l : job->layers_) {
      l.bytes_done = l.desc.size;
      l.complete = true;
    }
    finish(job, std::nullopt);
    co_return;
  }
  if (auto r = model::check_target(dir); !r) {
    finish(job, std::move(r).error());
    co_return;
  }
  // Free space in DIR's filesystem: copies (another filesystem than the
  // cache) and extracted tar layers (their compressed size: a lower bound).
  std::error_code ec;
  fs::create_directories(cache_dir_, ec);
  const bool linkable = model::same_filesystem(cache_dir_, dir.parent_path());
  std::uint64_t needed = 0;
  for (const auto& l : job->layers_)
    if (l.desc.format != model::layer_format::raw || !linkable) needed += l.desc.size;
  if (auto r = model::check_free_space(dir.parent_path(), needed); !r) {
    finish(job, std::move(r).error());
    co_return;
  }

  job->set_state(pull_state::downloading);
  if (auto r = co_await download(job, target); !r) {
    finish(job, std::move(r).error());
    co_return;
  }

  job->set_state(pull_state::laying_out);
  // Pin every layer's cache file (GC never evicts an open task) for the layout.
  std::vector<std::shared_ptr<storage::task_handle>> pins;
  std::vector<model::placed_layer> placed;
  for (const auto& l : job->layers_) {
    auto h = store_.open_existing(l.desc.blob.hex);
    if (!h || !(*h)->complete()) {
      finish(job, error(errc::not_found, "layer " + l.desc.blob.str() +
                                             " left the cache before it was laid out (retry)"));
      co_return;
    }
    placed.push_back({l.desc, (*h)->path()});
    pins.push_back(std::move(*h));
  }
  auto laid = co_await asio::co_spawn(
      blocking_.get_executor(),
      layout_on_pool(dir, std::move(placed), want, job, &job->cancelled_), use_awaitable);
  pins.clear();
  if (!laid) {
    finish(job, std::move(laid).error());
    co_return;
  }
  job->files_ = laid->files;
  job->linked_ = laid->linked;
  job->copied_ = laid->copied;
  job->extracted_ = laid->extracted;
  finish(job, std::nullopt);
}

}  // namespace shoal::api
