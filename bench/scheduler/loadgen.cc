// shoal-bench-scheduler: a load generator that plays many hosts and tasks
// against one shoal-scheduler over gRPC (bench/README.md, "scheduler").
//
// Every (host, task) pair is one AnnouncePeer stream (a ClientBidiReactor on
// gRPC's callback threads); a driver thread paces the events. Hosts spread
// over --connections channels (each its own TCP connection, like real
// daemons). Measures the decision latency as seen by a daemon:
//   register      Register written -> the first FetchFromOrigin or Parents
//                 decision on that stream (the PieceDigests before it is not
//                 a scheduling decision and is skipped). Sampled for every
//                 stream of the ramp and, under the steady load, for the
//                 --churn streams per second that leave and register anew.
//   piece_failed  PieceFailed written -> the next Parents decision on that
//                 stream, if it comes within 100 ms (the scheduler re-sends
//                 Parents only when its choice changed; the rest are counted
//                 as unanswered, not as samples; a Parents from the 1 s tick
//                 inside the window would be counted too).
// and reads the scheduler's CPU seconds and peak RSS from /proc/PID when
// --scheduler-pid is given. Prints a summary and writes JSON.

#include <absl/synchronization/mutex.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "shoal/v1/scheduler.grpc.pb.h"

namespace {

namespace v1 = shoal::v1;
namespace json = boost::json;
using clk = std::chrono::steady_clock;

struct config {
  std::string scheduler = "127.0.0.1:7410";
  int scheduler_pid = 0;
  std::uint32_t hosts = 2000;
  std::uint32_t tasks = 50;
  std::uint32_t peers = 500;  // per task
  std::uint32_t pieces = 64;  // per task
  std::uint32_t connections = 0;  // 0 = one per host
  double ramp_rate = 2500;        // streams opened per second
  double event_interval = 1.0;    // seconds between a child's piece events
  double source_interval = 0.02;  // seconds between the source's origin pieces
  double fail_ratio = 0.05;       // share of a child's piece events that are PieceFailed
  double duration = 30;           // seconds of the steady phase (after the ramp)
  double churn = 100;             // streams per second replaced during the steady phase
  double heartbeat = 5;           // seconds between a host's AnnounceHost
  bool heartbeat_burst = false;   // every host at the same instant (default: each on its own timer)
  std::string json_path;
};

// A deterministic 64-hex string (not a real digest: the scheduler only
// compares them).
std::string hex64(std::uint64_t a, std::uint64_t b) {
  auto mix = [](std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  char buf[65];
  std::snprintf(buf, sizeof buf, "%016llx%016llx%016llx%016llx",
                static_cast<unsigned long long>(mix(a * 4 + 0 + (b << 20))),
                static_cast<unsigned long long>(mix(a * 4 + 1 + (b << 20))),
                static_cast<unsigned long long>(mix(a * 4 + 2 + (b << 20))),
                static_cast<unsigned long long>(mix(a * 4 + 3 + (b << 20))));
  return buf;
}

std::string host_name(std::uint32_t h) { return "bench-host-" + std::to_string(h); }
std::string task_hex(std::uint32_t t) { return hex64(t, 0xfffff); }
std::string piece_hex(std::uint32_t t, std::uint32_t i) { return hex64(t, i + 1); }

struct samples {
  std::mutex mu;
  std::vector<double> register_ms, failed_ms, churn_ms;
  // Every Register's latency by the whole second (since the ramp started)
  // it was sent in: shows whether the tail is spread or comes in bursts.
  std::map<long, std::vector<double>> by_second;
  void add(std::vector<double>& v, double ms) {
    std::lock_guard l(mu);
    v.push_back(ms);
  }
  void add_register(std::vector<double>& v, double ms, long second) {
    std::lock_guard l(mu);
    v.push_back(ms);
    by_second[second].push_back(ms);
  }
};

clk::time_point g_ramp_start;

struct counters {
  std::atomic<std::uint64_t> events_sent{0}, piece_finished{0}, piece_failed{0}, done{0};
  std::atomic<std::uint64_t> d_digests{0}, d_parents{0}, d_origin{0}, d_stop{0}, d_abort{0};
  std::atomic<std::uint64_t> failed_unanswered{0}, streams_ended{0}, streams_error{0};
  std::atomic<std::uint64_t> announce_ok{0}, announce_err{0};
  std::atomic<std::uint64_t> announce_pending{0};  // heartbeats not answered yet
};

samples g_samples;
counters g_count;
std::mutex g_end_mu;
std::condition_variable g_end_cv;

class peer_sim : public grpc::ClientBidiReactor<v1::PeerEvent, v1::Decision> {
 public:
  peer_sim(const config& cfg, std::uint32_t task, std::uint32_t host, std::uint32_t seq,
           bool churned = false)
      : cfg_(cfg), task_(task), host_(host), churned_(churned), have_(cfg.pieces, false),
        digest_known_(cfg.pieces, false), rng_(seq * 7919u + 17u) {}

  void open(v1::Scheduler::Stub& stub) {
    stub.async()->AnnouncePeer(&ctx_, this);
    StartRead(&in_);
    AddHold();
    StartCall();
    v1::PeerEvent ev;
    auto* r = ev.mutable_register_();
    r->set_host_id(host_name(host_));
    r->set_task_id(task_hex(task_));
    r->set_content_length(std::uint64_t{cfg_.pieces} * kPieceLength);
    r->set_piece_length(kPieceLength);
    auto* o = r->mutable_origin();
    o->set_registry("registry.bench:5000");
    o->set_repository("bench/model");
    o->set_digest("sha256:" + task_hex(task_));
    r->set_has_client(true);
    std::lock_guard l(mu_);
    awaiting_register_ = true;
    enqueue(std::move(ev), timed::register_);
  }

  // Called by the driver every few ms: sends the next piece event if it is
  // time, and expires an unanswered PieceFailed. Without the lock until
  // either is due (the driver walks every stream: 25,000 of them).
  void tick(clk::time_point now) {
    if (now.time_since_epoch().count() < wake_.load(std::memory_order_acquire)) return;
    std::lock_guard l(mu_);
    step(now);
    expire(now);
    auto wake = next_;
    if (awaiting_failed_ && failed_sent_ != clk::time_point{})
      wake = std::min(wake, failed_sent_ + kFailedWindow);
    wake_.store(wake.time_since_epoch().count(), std::memory_order_release);
  }

 private:
  void step(clk::time_point now) {
    if (closed_ || half_closed_ || queue_.size() > 2 || now < next_) return;
    if (is_source_ && !origin_.empty()) {
      next_ = now + secs(cfg_.source_interval);
      std::uint32_t i = origin_.front();
      origin_.pop_front();
      if (have_[i]) return;
      have_[i] = true;
      ++held_;
      v1::PeerEvent ev;
      auto* f = ev.mutable_piece_finished();
      f->set_index(i);
      f->set_sha256(piece_hex(task_, i));
      f->set_cost_us(1000);
      enqueue(std::move(ev), timed::none);
      g_count.piece_finished++;
      return;
    }
    next_ = now + secs(cfg_.event_interval * std::uniform_real_distribution<double>(0.5, 1.5)(rng_));
    if (held_ == cfg_.pieces) {
      if (!done_sent_) {
        done_sent_ = true;
        if (is_source_) {
          v1::PeerEvent sf;
          sf.mutable_source_finished()->set_sha256(task_hex(task_));
          sf.mutable_source_finished()->set_verified(true);
          enqueue(std::move(sf), timed::none);
        }
        v1::PeerEvent d;
        d.mutable_done();
        enqueue(std::move(d), timed::none);
        g_count.done++;
      }
      return;
    }
    if (parents_.empty()) return;
    // A piece whose digest is known (a child only reports verified pieces).
    std::uint32_t start = std::uniform_int_distribution<std::uint32_t>(0, cfg_.pieces - 1)(rng_);
    for (std::uint32_t k = 0; k < cfg_.pieces; ++k) {
      std::uint32_t i = (start + k) % cfg_.pieces;
      if (have_[i] || !digest_known_[i]) continue;
      const std::string& parent =
          parents_[std::uniform_int_distribution<std::size_t>(0, parents_.size() - 1)(rng_)];
      v1::PeerEvent ev;
      if (!awaiting_failed_ && std::uniform_real_distribution<double>(0, 1)(rng_) < cfg_.fail_ratio) {
        auto* f = ev.mutable_piece_failed();
        f->set_index(i);
        f->set_parent_host_id(parent);
        f->set_reason(v1::PieceFailed::UNAVAILABLE);
        f->set_message("bench: simulated 503");
        awaiting_failed_ = true;
        enqueue(std::move(ev), timed::failed);
        g_count.piece_failed++;
      } else {
        have_[i] = true;
        ++held_;
        auto* f = ev.mutable_piece_finished();
        f->set_index(i);
        f->set_sha256(piece_hex(task_, i));
        f->set_parent_host_id(parent);
        f->set_cost_us(20000);
        enqueue(std::move(ev), timed::none);
        g_count.piece_finished++;
      }
      return;
    }
  }

  // Expires a PieceFailed that got no Parents within kFailedWindow.
  void expire(clk::time_point now) {
    if (awaiting_failed_ && failed_sent_ != clk::time_point{} &&
        now - failed_sent_ > kFailedWindow) {
      awaiting_failed_ = false;
      failed_sent_ = {};
      g_count.failed_unanswered++;
    }
  }

 public:
  // Half-closes (WritesDone once the queue is written): the scheduler drops the peer.
  void finish() {
    std::lock_guard l(mu_);
    if (closed_ || half_closed_) return;
    half_closed_ = true;
    if (!writing_) StartWritesDone();
  }
  void cancel() { ctx_.TryCancel(); }

  void OnWriteDone(bool ok) override {
    std::lock_guard l(mu_);
    queue_.pop_front();
    writing_ = false;
    if (!ok) {
      queue_.clear();
      return;
    }
    if (!closed_ && !queue_.empty()) {
      start_write();
    } else if (half_closed_ && !closed_) {
      StartWritesDone();
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        std::lock_guard l(mu_);
        closed_ = true;
      }
      RemoveHold();
      return;
    }
    const auto now = clk::now();
    {
      std::lock_guard l(mu_);
      handle(in_, now);
    }
    StartRead(&in_);
  }

  void OnDone(const grpc::Status& s) override {
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
      if (g_count.streams_error++ < 5)
        std::fprintf(stderr, "stream (task %u host %u) ended: %d %s\n", task_, host_,
                     static_cast<int>(s.error_code()), s.error_message().c_str());
    }
    g_count.streams_ended++;
    std::lock_guard l(g_end_mu);
    g_end_cv.notify_all();
  }
  void OnWritesDoneDone(bool) override {}

 private:
  static constexpr std::uint32_t kPieceLength = 4u << 20;
  static constexpr auto kFailedWindow = std::chrono::milliseconds(100);
  enum class timed { none, register_, failed };
  static clk::duration secs(double s) {
    return std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(s));
  }

  void enqueue(v1::PeerEvent ev, timed t) {
    queue_.emplace_back(std::move(ev), t);
    g_count.events_sent++;
    if (!writing_) start_write();
  }
  void start_write() {
    writing_ = true;
    auto& [ev, t] = queue_.front();
    if (t == timed::register_) register_sent_ = clk::now();
    if (t == timed::failed) {
      failed_sent_ = clk::now();
      // The driver wakes for its expiry (wake_ may be a whole event interval away).
      wake_.store(std::min(wake_.load(std::memory_order_relaxed),
                           (failed_sent_ + kFailedWindow).time_since_epoch().count()),
                  std::memory_order_release);
    }
    StartWrite(&ev);
  }

  void handle(const v1::Decision& d, clk::time_point now) {
    auto ms = [&](clk::time_point since) {
      return std::chrono::duration<double, std::milli>(now - since).count();
    };
    switch (d.decision_case()) {
      case v1::Decision::kDigests:
        g_count.d_digests++;
        for (const auto& pd : d.digests().digests())
          if (pd.index() < cfg_.pieces) digest_known_[pd.index()] = true;
        return;
      case v1::Decision::kFromOrigin:
        g_count.d_origin++;
        if (awaiting_register_) {
          awaiting_register_ = false;
          g_samples.add_register(churned_ ? g_samples.churn_ms : g_samples.register_ms,
                                 ms(register_sent_), sent_second());
        }
        is_source_ = true;
        origin_.assign(d.from_origin().pieces().begin(), d.from_origin().pieces().end());
        return;
      case v1::Decision::kStopFromOrigin:
        g_count.d_stop++;
        is_source_ = false;
        origin_.clear();
        return;
      case v1::Decision::kParents:
        g_count.d_parents++;
        if (awaiting_register_) {
          awaiting_register_ = false;
          g_samples.add_register(churned_ ? g_samples.churn_ms : g_samples.register_ms,
                                 ms(register_sent_), sent_second());
        } else if (awaiting_failed_ && failed_sent_ != clk::time_point{}) {
          awaiting_failed_ = false;
          if (now - failed_sent_ <= kFailedWindow) g_samples.add(g_samples.failed_ms, ms(failed_sent_));
          else g_count.failed_unanswered++;
          failed_sent_ = {};
        }
        parents_.clear();
        for (const auto& p : d.parents().parents()) parents_.push_back(p.host_id());
        return;
      case v1::Decision::kAbort:
        g_count.d_abort++;
        if (g_count.d_abort < 5)
          std::fprintf(stderr, "abort (task %u host %u): %s\n", task_, host_,
                       d.abort().message().c_str());
        return;
      default: return;
    }
  }

  const config& cfg_;
  const std::uint32_t task_, host_;
  const bool churned_;
  grpc::ClientContext ctx_;
  v1::Decision in_;
  std::mutex mu_;
  std::deque<std::pair<v1::PeerEvent, timed>> queue_;
  bool writing_ = false, closed_ = false, half_closed_ = false;
  std::vector<bool> have_, digest_known_;
  std::uint32_t held_ = 0;
  std::deque<std::uint32_t> origin_;
  std::vector<std::string> parents_;
  bool is_source_ = false, done_sent_ = false;
  bool awaiting_register_ = false, awaiting_failed_ = false;
  clk::time_point register_sent_{}, failed_sent_{};
  long sent_second() const {
    return static_cast<long>(
        std::chrono::duration_cast<std::chrono::seconds>(register_sent_ - g_ramp_start).count());
  }
  clk::time_point next_{};
  // When tick() next has anything to do (steady_clock ticks); 0 = check now.
  std::atomic<clk::rep> wake_{0};
  std::mt19937 rng_;
};

struct proc_figures {
  double cpu_s = 0;
  double hwm_mib = 0;
  double rss_mib = 0;
  bool ok = false;
};

proc_figures read_proc(int pid) {
  proc_figures f;
  if (pid <= 0) return f;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(stat)), {});
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return f;
  std::istringstream in(s.substr(rp + 2));
  std::vector<std::string> fields;
  for (std::string w; in >> w;) fields.push_back(w);
  if (fields.size() < 13) return f;
  f.cpu_s = (std::stod(fields[11]) + std::stod(fields[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) f.hwm_mib = std::stod(line.substr(6)) / 1024;
    if (line.rfind("VmRSS:", 0) == 0) f.rss_mib = std::stod(line.substr(6)) / 1024;
  }
  f.ok = true;
  return f;
}

json::object percentiles(std::vector<double> v) {
  json::object o;
  o["count"] = v.size();
  if (v.empty()) return o;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
  };
  o["p50_ms"] = at(0.50);
  o["p90_ms"] = at(0.90);
  o["p99_ms"] = at(0.99);
  o["max_ms"] = v.back();
  return o;
}

void raise_nofile() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

struct announce_call {
  grpc::ClientContext ctx;
  v1::AnnounceHostRequest req;
  v1::AnnounceHostResponse resp;
};

// The AnnounceHost of host h (what a daemon sends at start and as heartbeat).
std::unique_ptr<announce_call> announce_request(std::uint32_t h) {
  auto c = std::make_unique<announce_call>();
  c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto* host = c->req.mutable_host();
  host->set_id(host_name(h));
  host->set_hostname(host_name(h));
  host->set_peer_addr("10." + std::to_string(h / 250) + "." + std::to_string(h % 250) + ".1:7412");
  host->set_zone("zone-" + std::to_string(h % 4));
  host->set_upload_slots(8);
  host->set_disk_total_bytes(1ull << 40);
  host->set_disk_free_bytes(1ull << 39);
  host->set_version("bench");
  return c;
}

// One host's heartbeat, not waited for: the call frees itself when answered
// (wait_heartbeats() waits for the last ones before the stubs go).
void announce_one(std::uint32_t h, v1::Scheduler::Stub& stub) {
  auto* raw = announce_request(h).release();
  ++g_count.announce_pending;
  stub.async()->AnnounceHost(&raw->ctx, &raw->req, &raw->resp, [raw](grpc::Status s) {
    (s.ok() ? g_count.announce_ok : g_count.announce_err)++;
    delete raw;
    std::lock_guard l(g_end_mu);
    --g_count.announce_pending;
    g_end_cv.notify_all();
  });
}

void wait_heartbeats() {
  std::unique_lock l(g_end_mu);
  // Each call has a 30 s deadline: its callback comes by then.
  g_end_cv.wait_for(l, std::chrono::seconds(40), [] { return g_count.announce_pending == 0; });
}

// AnnounceHost for every host at once, waiting for all answers.
void announce_all(const config& cfg, std::vector<std::unique_ptr<v1::Scheduler::Stub>>& stubs) {
  std::atomic<std::uint32_t> pending{cfg.hosts};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<announce_call>> calls;
  calls.reserve(cfg.hosts);
  for (std::uint32_t h = 0; h < cfg.hosts; ++h) {
    auto c = announce_request(h);
    auto* raw = c.get();
    stubs[h % stubs.size()]->async()->AnnounceHost(&raw->ctx, &raw->req, &raw->resp,
                                                    [&](grpc::Status s) {
                                                      (s.ok() ? g_count.announce_ok : g_count.announce_err)++;
                                                      // Under the lock: the waiter must not return (and
                                                      // destroy mu, cv) before this callback is done.
                                                      std::lock_guard l(mu);
                                                      if (--pending == 0) cv.notify_all();
                                                    });
    calls.push_back(std::move(c));
  }
  std::unique_lock l(mu);
  cv.wait(l, [&] { return pending == 0; });
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  CLI::App app{"shoal-bench-scheduler: plays hosts and tasks against one shoal-scheduler"};
  app.add_option("--scheduler", cfg.scheduler, "HOST:PORT of the scheduler's gRPC listener")->capture_default_str();
  app.add_option("--scheduler-pid", cfg.scheduler_pid, "Read the scheduler's CPU and peak RSS from /proc/PID");
  app.add_option("--hosts", cfg.hosts, "Hosts")->capture_default_str()->check(CLI::Range(1u, 1000000u));
  app.add_option("--tasks", cfg.tasks, "Tasks")->capture_default_str()->check(CLI::Range(1u, 100000u));
  app.add_option("--peers", cfg.peers, "Peers per task (each on a distinct host: <= --hosts)")
      ->capture_default_str();
  app.add_option("--pieces", cfg.pieces, "Pieces per task (4 MiB each)")->capture_default_str()
      ->check(CLI::Range(1u, 100000u));
  app.add_option("--connections", cfg.connections, "gRPC connections (0 = one per host)")->capture_default_str();
  app.add_option("--ramp-rate", cfg.ramp_rate, "AnnouncePeer streams opened per second")->capture_default_str();
  app.add_option("--event-interval", cfg.event_interval, "Seconds between a child's piece events")
      ->capture_default_str();
  app.add_option("--source-interval", cfg.source_interval,
                 "Seconds between the source's PieceFinished from origin")->capture_default_str();
  app.add_option("--fail-ratio", cfg.fail_ratio, "Share of child piece events sent as PieceFailed")
      ->capture_default_str();
  app.add_option("--duration", cfg.duration, "Seconds of steady load after the ramp")->capture_default_str();
  app.add_option("--churn", cfg.churn,
                 "Streams per second that leave (WritesDone) and register anew during the steady load")
      ->capture_default_str();
  app.add_option("--heartbeat", cfg.heartbeat, "Seconds between a host's AnnounceHost")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  app.add_flag("--heartbeat-burst", cfg.heartbeat_burst,
               "Every host announces at the same instant (default: each host on its own timer)");
  app.add_option("--json", cfg.json_path, "Write the figures here");
  CLI11_PARSE(app, argc, argv);
  // As in shoal-scheduler: Debian's Abseil checks every absl::Mutex gRPC
  // takes for lock-order cycles. The generator shares the CPUs with the
  // scheduler it measures, so its CPU use is kept down.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (cfg.peers > cfg.hosts) {
    std::fprintf(stderr, "--peers (%u) must be <= --hosts (%u): each peer of a task is a distinct host\n",
                 cfg.peers, cfg.hosts);
    return 2;
  }
  raise_nofile();
  const std::uint32_t nconn = cfg.connections == 0 ? cfg.hosts : std::min(cfg.connections, cfg.hosts);

  std::vector<std::unique_ptr<v1::Scheduler::Stub>> stubs;
  for (std::uint32_t c = 0; c < nconn; ++c) {
    grpc::ChannelArguments args;
    // Its own TCP connection per channel (channels otherwise share subchannels).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("bench.channel", static_cast<int>(c));
    stubs.push_back(v1::Scheduler::NewStub(
        grpc::CreateCustomChannel(cfg.scheduler, grpc::InsecureChannelCredentials(), args)));
  }

  const auto t_start = clk::now();
  const auto p_start = read_proc(cfg.scheduler_pid);
  announce_all(cfg, stubs);
  if (g_count.announce_err > 0) {
    std::fprintf(stderr, "AnnounceHost failed for %llu of %u hosts (is the scheduler at %s?)\n",
                 static_cast<unsigned long long>(g_count.announce_err.load()), cfg.hosts,
                 cfg.scheduler.c_str());
    return 1;
  }
  const double announce_s = std::chrono::duration<double>(clk::now() - t_start).count();

  // Peer j of task t lives on host (t * peers + j) % hosts: tasks overlap on hosts.
  // `sims` owns every stream ever opened (reactors live until exit);
  // `active` is the current stream of each (task, peer) slot.
  std::vector<std::unique_ptr<peer_sim>> sims;
  const std::size_t total = std::size_t{cfg.tasks} * cfg.peers;
  const std::size_t churn_max = static_cast<std::size_t>(cfg.churn * cfg.duration) + 16;
  sims.reserve(total + churn_max);
  std::vector<std::atomic<peer_sim*>> active(total);
  std::vector<std::uint32_t> slot_host(total), slot_task(total);
  std::atomic<bool> stop_driver{false};
  std::atomic<std::size_t> opened{0};
  // Heartbeats: a daemon announces every --heartbeat seconds from its own
  // start, so host h's beats fall at phase h/hosts of the interval; with
  // --heartbeat-burst every host announces at the same instant.
  const auto t_beats = clk::now();
  const auto beat =
      std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(cfg.heartbeat));
  std::uint64_t beats_sent = 0;  // spread: host beats_sent % hosts is next
  auto t_burst = t_beats;
  std::thread burst;  // --heartbeat-burst: the round in progress
  // The driver thread paces piece events and host heartbeats.
  std::thread driver([&] {
    while (!stop_driver) {
      const auto now = clk::now();
      const std::size_t n = opened.load();
      for (std::size_t k = 0; k < n; ++k) {
        active[k].load()->tick(now);
      }
      if (cfg.heartbeat_burst) {
        if (now - t_burst > beat) {
          t_burst = now;
          if (burst.joinable()) burst.join();  // waits if the previous round is still out
          burst = std::thread([&] { announce_all(cfg, stubs); });
        }
      } else {
        // Beat k is due at t_beats + (k + hosts) / hosts * interval: the
        // first of each host one interval after the initial announce.
        const double due =
            std::chrono::duration<double>(now - t_beats).count() / cfg.heartbeat * cfg.hosts -
            cfg.hosts;
        for (; due >= 0 && static_cast<double>(beats_sent) <= due; ++beats_sent) {
          const auto h = static_cast<std::uint32_t>(beats_sent % cfg.hosts);
          announce_one(h, *stubs[h % stubs.size()]);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  // Ramp: open the streams at --ramp-rate, task-major so each task's first
  // peer (its source) registers first.
  const auto ramp_start = clk::now();
  g_ramp_start = ramp_start;
  for (std::uint32_t j = 0; j < cfg.peers; ++j) {
    for (std::uint32_t t = 0; t < cfg.tasks; ++t) {
      const std::uint32_t host = (t * cfg.peers + j) % cfg.hosts;
      sims.push_back(std::make_unique<peer_sim>(cfg, t, host, static_cast<std::uint32_t>(sims.size())));
      sims.back()->open(*stubs[host % nconn]);
      active[sims.size() - 1] = sims.back().get();
      slot_host[sims.size() - 1] = host;
      slot_task[sims.size() - 1] = t;
      opened = sims.size();
      const auto due = ramp_start + std::chrono::duration_cast<clk::duration>(
                                        std::chrono::duration<double>(sims.size() / cfg.ramp_rate));
      std::this_thread::sleep_until(due);
    }
  }
  const double ramp_s = std::chrono::duration<double>(clk::now() - ramp_start).count();
  const auto p_ramp = read_proc(cfg.scheduler_pid);
  std::fprintf(stderr, "opened %zu streams in %.1f s; steady load for %.0f s\n", total, ramp_s, cfg.duration);
  // Steady load; meanwhile --churn streams per second leave and register anew.
  {
    std::mt19937 rng(12345);
    const auto steady_start = clk::now();
    const auto until = steady_start + std::chrono::duration_cast<clk::duration>(
                                          std::chrono::duration<double>(cfg.duration));
    std::size_t churned = 0;
    while (clk::now() < until) {
      if (cfg.churn <= 0 || churned + 1 >= churn_max) {
        std::this_thread::sleep_until(until);
        break;
      }
      const auto due = steady_start + std::chrono::duration_cast<clk::duration>(
                                          std::chrono::duration<double>((churned + 1) / cfg.churn));
      std::this_thread::sleep_until(std::min(due, until));
      if (clk::now() >= until) break;
      const std::size_t k = std::uniform_int_distribution<std::size_t>(0, total - 1)(rng);
      active[k].load()->finish();
      sims.push_back(std::make_unique<peer_sim>(cfg, slot_task[k], slot_host[k],
                                                static_cast<std::uint32_t>(sims.size()), true));
      sims.back()->open(*stubs[slot_host[k] % nconn]);
      active[k] = sims.back().get();
      ++churned;
    }
  }
  const auto p_steady = read_proc(cfg.scheduler_pid);
  const auto steady_end = clk::now();
  stop_driver = true;
  driver.join();
  if (burst.joinable()) burst.join();
  wait_heartbeats();

  // Close every stream (WritesDone): the scheduler removes the peers.
  for (auto& s : sims) s->finish();
  const std::size_t opened_all = sims.size();
  {
    std::unique_lock l(g_end_mu);
    g_end_cv.wait_for(l, std::chrono::seconds(60), [&] { return g_count.streams_ended == opened_all; });
  }
  const double close_s = std::chrono::duration<double>(clk::now() - steady_end).count();
  if (g_count.streams_ended != opened_all) {
    std::fprintf(stderr, "%zu streams still open after 60 s; cancelling\n",
                 opened_all - static_cast<std::size_t>(g_count.streams_ended.load()));
    for (auto& s : sims) s->cancel();
    std::unique_lock l(g_end_mu);
    g_end_cv.wait_for(l, std::chrono::seconds(30), [&] { return g_count.streams_ended == opened_all; });
  }
  const auto p_end = read_proc(cfg.scheduler_pid);

  std::vector<double> reg, churn, failed, all;
  {
    std::lock_guard l(g_samples.mu);
    reg = g_samples.register_ms;
    churn = g_samples.churn_ms;
    failed = g_samples.failed_ms;
  }
  // The headline: every Register's decision (the ramp and under load).
  // PieceFailed samples stay apart: a Parents from the scheduler's 1 s tick
  // can land in their window.
  all = reg;
  all.insert(all.end(), churn.begin(), churn.end());

  json::object out;
  out["benchmark"] = "scheduler";
  json::object c;
  c["hosts"] = cfg.hosts;
  c["tasks"] = cfg.tasks;
  c["peers_per_task"] = cfg.peers;
  c["streams"] = total;
  c["pieces_per_task"] = cfg.pieces;
  c["connections"] = nconn;
  c["ramp_rate"] = cfg.ramp_rate;
  c["event_interval_s"] = cfg.event_interval;
  c["source_interval_s"] = cfg.source_interval;
  c["fail_ratio"] = cfg.fail_ratio;
  c["duration_s"] = cfg.duration;
  c["churn_per_s"] = cfg.churn;
  c["heartbeat_s"] = cfg.heartbeat;
  c["heartbeat_burst"] = cfg.heartbeat_burst;
  c["heartbeats_ok"] = g_count.announce_ok.load();
  c["heartbeats_failed"] = g_count.announce_err.load();
  out["config"] = c;
  json::object ph;
  ph["announce_s"] = announce_s;
  ph["ramp_s"] = ramp_s;
  ph["close_s"] = close_s;
  out["phases"] = ph;
  json::object lat;
  lat["all"] = percentiles(all);
  lat["register"] = percentiles(reg);
  lat["register_under_load"] = percentiles(churn);
  lat["piece_failed"] = percentiles(failed);
  {
    json::array secs;
    std::lock_guard l(g_samples.mu);
    for (auto& [sec, v] : g_samples.by_second) {
      json::object o = percentiles(v);
      o["second"] = sec;
      secs.push_back(std::move(o));
    }
    lat["register_by_second"] = std::move(secs);
  }
  out["decision_latency"] = lat;
  json::object ev;
  ev["sent"] = g_count.events_sent.load();
  ev["piece_finished"] = g_count.piece_finished.load();
  ev["piece_failed"] = g_count.piece_failed.load();
  ev["piece_failed_unanswered"] = g_count.failed_unanswered.load();
  ev["done"] = g_count.done.load();
  ev["rate_per_s"] = static_cast<double>(g_count.events_sent.load()) /
                     std::chrono::duration<double>(steady_end - ramp_start).count();
  out["events"] = ev;
  json::object dec;
  dec["digests"] = g_count.d_digests.load();
  dec["parents"] = g_count.d_parents.load();
  dec["from_origin"] = g_count.d_origin.load();
  dec["stop_from_origin"] = g_count.d_stop.load();
  dec["abort"] = g_count.d_abort.load();
  out["decisions"] = dec;
  json::object st;
  st["opened"] = opened_all;
  st["ended"] = g_count.streams_ended.load();
  st["errors"] = g_count.streams_error.load();
  out["streams"] = st;
  if (p_end.ok) {
    json::object s;
    s["cpu_s_total"] = p_end.cpu_s - p_start.cpu_s;
    s["cpu_s_ramp"] = p_ramp.cpu_s - p_start.cpu_s;
    s["cpu_s_steady"] = p_steady.cpu_s - p_ramp.cpu_s;
    s["cpu_s_close"] = p_end.cpu_s - p_steady.cpu_s;
    s["cpu_share_steady"] = (p_steady.cpu_s - p_ramp.cpu_s) / cfg.duration;
    s["peak_rss_mib"] = p_end.hwm_mib;
    s["rss_mib_after_steady"] = p_steady.rss_mib;
    out["scheduler"] = s;
  }
  const auto self = read_proc(static_cast<int>(getpid()));
  out["generator"] = json::object{{"cpu_s", self.cpu_s}, {"peak_rss_mib", self.hwm_mib}};

  auto pr = [](const char* name, const json::object& o) {
    if (o.at("count").as_uint64() == 0) {
      std::printf("%-14s no samples\n", name);
      return;
    }
    std::printf("%-14s n=%-7llu p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  max %8.2f ms\n", name,
                static_cast<unsigned long long>(o.at("count").as_uint64()), o.at("p50_ms").as_double(),
                o.at("p90_ms").as_double(), o.at("p99_ms").as_double(), o.at("max_ms").as_double());
  };
  std::printf("%u hosts, %u tasks x %u peers = %zu streams over %u connections; ramp %.1f s, "
              "steady %.0f s, %.0f events/s\n",
              cfg.hosts, cfg.tasks, cfg.peers, total, nconn, ramp_s, cfg.duration,
              ev["rate_per_s"].as_double());
  pr("decision", lat["all"].as_object());
  pr("register", lat["register"].as_object());
  pr("register (load)", lat["register_under_load"].as_object());
  pr("piece_failed", lat["piece_failed"].as_object());
  if (p_end.ok)
    std::printf("scheduler: %.1f CPU s (ramp %.1f, steady %.1f, close %.1f), peak RSS %.0f MiB\n",
                p_end.cpu_s - p_start.cpu_s, p_ramp.cpu_s - p_start.cpu_s, p_steady.cpu_s - p_ramp.cpu_s,
                p_end.cpu_s - p_steady.cpu_s, p_end.hwm_mib);
  std::printf("streams ended %llu of %zu (%llu errors), aborts %llu\n",
              static_cast<unsigned long long>(g_count.streams_ended.load()), opened_all,
              static_cast<unsigned long long>(g_count.streams_error.load()),
              static_cast<unsigned long long>(g_count.d_abort.load()));
  if (!cfg.json_path.empty()) {
    std::ofstream f(cfg.json_path);
    f << json::serialize(out) << "\n";
  }
  std::fflush(stdout);
  // Reactors are owned by `sims`; any still-open call would touch freed
  // state if destroyed here, so leave without running destructors.
  std::_Exit(g_count.streams_ended == opened_all ? 0 : 1);
}
