// shoal-scheduler: decides who fetches which pieces from whom. Composition
// root: parses flags (every flag is also a YAML key in --config), builds the
// gRPC service and the HTTP endpoint on one owner thread, and hands them one
// shutdown signal (SIGTERM/SIGINT).

#include <absl/synchronization/mutex.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/fmt/fmt.h>

#include <CLI/CLI.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/http.h"
#include "common/log.h"
#include "common/metrics.h"
#include "scheduler/dashboard/dashboard.h"
#include "scheduler/resource/clock.h"
#include "scheduler/service/service.h"
#include "shoal/grpc_library.h"

namespace asio = boost::asio;

namespace {

struct flags {
  std::string listen = "0.0.0.0:7410";
  std::string http_listen = "127.0.0.1:7411";
  double host_ttl = 30;
  double source_stall_timeout = 20;
  std::uint32_t parents_per_child = 8;
  std::vector<std::string> origin_zones;
  double election_window = 0.3;
  std::uint32_t announce_interval = 5;
  double preheat_seed_timeout = 60;
  std::string log_level = "info";
  bool dashboard = true;
  std::string dashboard_token;
};

int fail(const std::string& what) {
  std::cerr << "shoal-scheduler: " << what << "\n";
  return 2;
}

shoal::scheduler::duration seconds(double s) {
  return std::chrono::duration_cast<shoal::scheduler::duration>(std::chrono::duration<double>(s));
}

// /healthz and /metrics (never behind the dashboard token: probes and
// Prometheus scrape them), then the dashboard and its API when enabled.
asio::awaitable<bool> http_api(shoal::http::request req, boost::beast::tcp_stream& stream,
                               shoal::metrics::registry& reg,
                               shoal::scheduler::dashboard::server* dash) {
  using shoal::http::status;
  std::string_view target = req.target();
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  if (target == "/healthz")
    co_return co_await shoal::http::send(stream, req, status::ok, "ok\n", "text/plain");
  if (target == "/metrics")
    co_return co_await shoal::http::send(stream, req, status::ok, reg.render(),
                                         "text/plain; version=0.0.4; charset=utf-8");
  if (dash != nullptr && shoal::scheduler::dashboard::server::owns(target))
    co_return co_await dash->handle(std::move(req), stream);
  co_return co_await shoal::http::send(
      stream, req, status::not_found,
      "not found: try /healthz or /metrics (the dashboard is off: --dashboard=false)\n",
      "text/plain");
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's Abseil is built with assertions, which turns on absl::Mutex
  // deadlock detection: every lock gRPC takes walked a global lock graph
  // (7.6% of the scheduler's CPU under bench/scheduler's load, on the gRPC
  // threads). Lock order is gRPC's business, not ours to check at runtime.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  flags f;
  CLI::App app{"shoal-scheduler: tells every shoald whom to fetch which pieces from, and elects "
               "the one node per blob that reads the registry"};
  shoal::add_yaml_config(app, "");
  app.add_option("--listen", f.listen, "gRPC address for shoald (AnnounceHost, AnnouncePeer, ...)")
      ->capture_default_str();
  app.add_option("--http-listen", f.http_listen,
                 "Address of the dashboard, its JSON API (/api/v1/), /healthz and /metrics")
      ->capture_default_str();
  app.add_flag("--dashboard,!--no-dashboard", f.dashboard,
               "Serve the dashboard and its JSON API on --http-listen (--dashboard=false: "
               "only /healthz and /metrics)")
      ->capture_default_str();
  app.add_option("--dashboard-token", f.dashboard_token,
                 "Token the dashboard, its API and preheat require (Authorization: Bearer, or "
                 "open /?token=...); required when --http-listen is not a loopback address. "
                 "Also read from $SHOAL_DASHBOARD_TOKEN")
      ->envname("SHOAL_DASHBOARD_TOKEN");
  app.add_option("--host-ttl", f.host_ttl,
                 "Seconds without AnnounceHost after which a host and its peers are dropped")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--source-stall-timeout", f.source_stall_timeout,
                 "Seconds without a finished piece after which the source peer is replaced")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--parents-per-child", f.parents_per_child,
                 "Parents sent to each downloading peer (more let a child see more of the "
                 "swarm's pieces; each costs the scheduler work)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--origin-zone", f.origin_zones,
                 "ZONE, or REGISTRY=ZONE for one registry (HOST[:PORT]; repeatable): the zone "
                 "nearest to the registries. A task's source is elected among its peers in that "
                 "zone (shoald --zone), waiting up to --election-window for one")
      ->delimiter(',');
  app.add_option("--election-window", f.election_window,
                 "Seconds a task's first election waits for a peer in the --origin-zone")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--announce-interval", f.announce_interval,
                 "Seconds between AnnounceHost heartbeats asked of the daemons")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  app.add_option("--preheat-seed-timeout", f.preheat_seed_timeout,
                 "Seconds a seed host may stay silent on a preheat job (not started, no "
                 "progress) before its part fails")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!shoal::init_logging(f.log_level)) return fail("unknown --log-level '" + f.log_level + "'");
  auto log = shoal::logger("scheduler");
  auto http_ep = shoal::http::parse_endpoint(f.http_listen);
  if (!http_ep) return fail("--http-listen: " + http_ep.error().message);
  // The token travels in a header, a cookie and a URL: unreserved URL characters
  // only, so it needs no escaping anywhere.
  if (f.dashboard_token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                          "0123456789-._~") != std::string::npos ||
      (!f.dashboard_token.empty() && f.dashboard_token.size() < 8) ||
      f.dashboard_token.size() > 256)
    return fail("--dashboard-token: use 8 to 256 letters, digits, '-', '.', '_' or '~' "
                "(e.g. the output of `openssl rand -hex 32`)");
  if (f.dashboard && f.dashboard_token.empty() && !http_ep->address().is_loopback())
    return fail("--http-listen " + f.http_listen +
                " is not a loopback address and no --dashboard-token is set: anyone who can "
                "reach it could read the cluster's state and start preheats. Set "
                "--dashboard-token (or $SHOAL_DASHBOARD_TOKEN), listen on 127.0.0.1, or turn "
                "the dashboard off with --dashboard=false");
  if (f.host_ttl <= f.announce_interval)
    return fail(fmt::format("--host-ttl ({}s) must be longer than --announce-interval ({}s), "
                            "or hosts expire between heartbeats",
                            f.host_ttl, f.announce_interval));

  // Signals are taken by sigwait below; block them before any thread starts
  // (gRPC's included) so none of those threads receives them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  // After the signal mask (gRPC starts threads), before the first gRPC object,
  // and outliving the last one (see grpc_library.h).
  shoal::grpc_library grpc_lib;
  shoal::metrics::registry reg;
  shoal::scheduler::system_clock clk;
  shoal::scheduler::engine_options eopts;
  eopts.host_ttl = seconds(f.host_ttl);
  eopts.source_stall_timeout = seconds(f.source_stall_timeout);
  eopts.announce_interval_seconds = f.announce_interval;
  eopts.evaluation.parents_per_child = f.parents_per_child;
  eopts.election_window = seconds(f.election_window);
  for (const auto& z : f.origin_zones) {
    const auto eq = z.find('=');
    const std::string zone = eq == std::string::npos ? z : z.substr(eq + 1);
    if (zone.empty() || eq == 0)
      return fail("--origin-zone '" + z +
                  "': use ZONE or REGISTRY=ZONE (e.g. registry.example:5000=a)");
    if (eq == std::string::npos) {
      if (!eopts.origin_zone.empty())
        return fail("--origin-zone: two default zones ('" + eopts.origin_zone + "' and '" + z +
                    "'); give the others as REGISTRY=ZONE");
      eopts.origin_zone = zone;
    } else {
      eopts.origin_zones[z.substr(0, eq)] = zone;
    }
  }
  shoal::scheduler::service_options sopts;
  sopts.listen = f.listen;
  sopts.preheat.seed_timeout = seconds(f.preheat_seed_timeout);

  {
    asio::io_context io;
    // Small requests only: the largest is a preheat's JSON body.
    shoal::http::limits http_limits;
    http_limits.header_bytes = 8 * 1024;
    http_limits.body_bytes = 16 * 1024;
    shoal::http::server http_srv(io.get_executor(), "scheduler-http", http_limits);
    if (auto r = http_srv.listen(*http_ep, "--http-listen"); !r) return fail(r.error().message);
    shoal::scheduler::service svc(io, eopts, sopts, clk, reg, std::random_device{}());
    if (auto r = svc.start(); !r) return fail(r.error().message);
    // The HTTP server runs on the owner thread (io), so the dashboard reads the
    // engine's state there, between its events.
    std::optional<shoal::scheduler::dashboard::server> dash;
    if (f.dashboard) {
      shoal::scheduler::dashboard::options dopts;
      dopts.token = f.dashboard_token;
      dopts.version = SHOAL_VERSION;
      dopts.preheat = &svc.preheat();
      dash.emplace(svc.decisions(), clk, std::move(dopts));
    }
    http_srv.start(
        [&reg, d = dash ? &*dash : nullptr](shoal::http::request req, boost::beast::tcp_stream& s) {
          return http_api(std::move(req), s, reg, d);
        });

    auto work = asio::make_work_guard(io);
    std::thread owner([&io] { io.run(); });
    log->info("shoal-scheduler ready: gRPC {} http {} host-ttl {}s stall-timeout {}s parents {}",
              f.listen, f.http_listen, f.host_ttl, f.source_stall_timeout, f.parents_per_child);
    if (f.dashboard)
      log->info("dashboard: http://{}/{}", f.http_listen,
                f.dashboard_token.empty() ? "" : " (open /?token=<--dashboard-token> once)");

    int sig = 0;
    sigwait(&sigs, &sig);
    log->info("signal {}: shutting down", sig);
    // gRPC first (it needs the owner thread to finish its streams), then HTTP,
    // then let the owner's queue drain and stop.
    svc.shutdown(std::chrono::seconds(5));
    asio::post(io, [&io, &http_srv] {
      http_srv.stop();
      asio::post(io, [&io] { io.stop(); });
    });
    work.reset();
    owner.join();
  }
  if (!grpc_lib.shutdown(std::chrono::seconds(5)))
    log->warn("gRPC had not finished shutting down 5 s after the scheduler's server stopped");
  log->info("shoal-scheduler stopped");
  return 0;
}
