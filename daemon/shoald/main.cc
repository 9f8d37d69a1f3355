// shoald: the node daemon. Composition root: parses flags (every flag is also
// a YAML key in --config), builds the parts, wires them, and hands them one
// shutdown signal (SIGTERM/SIGINT).

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <sys/statvfs.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>

#include "common/config.h"
#include "common/http.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/sha256.h"
#include "common/units.h"
#include "daemon/api/pulls.h"
#include "daemon/api/routes.h"
#include "daemon/api/routes_files.h"
#include "daemon/api/server.h"
#include "daemon/mirror/mirror.h"
#include "daemon/source/registry_client.h"
#include "daemon/storage/store.h"
#include "daemon/transfer/preheat.h"
#include "daemon/transfer/scheduler_client.h"
#include "daemon/transfer/swarm.h"
#include "daemon/transfer/task_manager.h"
#include "daemon/upload/piece_server.h"
#include "shoal/grpc_library.h"

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;

namespace {

struct flags {
  std::string data_dir = "/var/lib/shoal";
  std::string mirror_listen = "127.0.0.1:7400";
  std::string peer_listen = "0.0.0.0:7401";
  std::string admin_listen = "127.0.0.1:7402";
  std::string api_socket = "/run/shoal/shoald.sock";
  std::string api_listen;  // optional TCP address of the local API
  bool no_prefetch = false;
  std::vector<std::string> insecure_registries;
  std::string default_registry;
  std::string gc_high = "90%";
  std::string gc_low = "80%";
  std::string download_rate_limit = "0";
  std::vector<std::string> schedulers;
  std::string advertise_addr;
  std::string host_id;
  std::string zone;
  bool seed = false;
  std::string upload_rate_limit = "0";
  std::string link_rate = "0";
  // 3 beat 4 at 16 nodes (24.59 s against 25.06 s) and equalled it at 8;
  // 4 beat 8 (bench/README.md).
  std::uint32_t upload_slots = 3;
  bool no_back_to_source = false;
  std::string log_level = "info";
};

int fail(const std::string& what) {
  std::cerr << "shoald: " << what << "\n";
  return 2;
}

// /healthz, /readyz and /metrics on the admin listener.
// `refresh` updates the gauges that are read at scrape time.
asio::awaitable<bool> admin(shoal::http::request req, boost::beast::tcp_stream& stream,
                            shoal::metrics::registry& reg, const std::function<void()>& refresh,
                            bool& ready) {
  using shoal::http::status;
  std::string_view target = req.target();
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  if (target == "/healthz") co_return co_await shoal::http::send(stream, req, status::ok, "ok\n", "text/plain");
  if (target == "/readyz")
    co_return co_await shoal::http::send(stream, req,
                                         ready ? status::ok : status::service_unavailable,
                                         ready ? "ready\n" : "starting\n", "text/plain");
  if (target == "/metrics") {
    refresh();
    co_return co_await shoal::http::send(stream, req, status::ok, reg.render(),
                                         "text/plain; version=0.0.4; charset=utf-8");
  }
  co_return co_await shoal::http::send(stream, req, status::not_found,
                                       "not found: try /healthz, /readyz or /metrics\n",
                                       "text/plain");
}

}  // namespace

int main(int argc, char** argv) {
  // sendfile(2) has no MSG_NOSIGNAL: a client hanging up mid-blob must give
  // EPIPE, not kill the daemon.
  std::signal(SIGPIPE, SIG_IGN);
  flags f;
  CLI::App app{"shoald: Shoal's node daemon, a caching OCI registry mirror that shares pieces "
               "with other nodes"};
  shoal::add_yaml_config(app, "");
  app.add_option("--data-dir", f.data_dir, "Cache directory (content files and metadata)")
      ->capture_default_str();
  app.add_option("--mirror-listen", f.mirror_listen,
                 "Address of the registry mirror for containerd, CSI drivers and skopeo")
      ->capture_default_str();
  app.add_option("--peer-listen", f.peer_listen,
                 "Address of the piece server for other nodes (used with --scheduler)")
      ->capture_default_str();
  app.add_option("--admin-listen", f.admin_listen, "Address of /healthz, /readyz and /metrics")
      ->capture_default_str();
  app.add_option("--api-socket", f.api_socket, "Unix socket of the local API (shoalctl, CSI)")
      ->capture_default_str();
  app.add_option("--api-listen", f.api_listen,
                 "Also serve the local API on this TCP HOST:PORT (off by default; it has no "
                 "authentication: keep it on loopback)");
  app.add_flag("--no-prefetch", f.no_prefetch,
               "Do not start a ModelPack manifest's layers when the manifest passes through the "
               "mirror");
  app.add_option("--insecure-registry", f.insecure_registries,
                 "HOST[:PORT] reached over plain http; loopback/private addresses are allowed "
                 "only for these (repeatable)");
  app.add_option("--default-registry", f.default_registry,
                 "Upstream HOST[:PORT] for clients that send no ns= parameter");
  app.add_option("--gc-high-watermark", f.gc_high,
                 "Start evicting when disk use passes this (\"90%\" of the filesystem or a "
                 "size such as \"100GiB\" of cache)")
      ->capture_default_str();
  app.add_option("--gc-low-watermark", f.gc_low, "Evict down to this")->capture_default_str();
  app.add_option("--download-rate-limit", f.download_rate_limit,
                 "Bytes per second for downloads (e.g. 25MiB); 0 = unlimited")
      ->capture_default_str();
  app.add_option("--scheduler", f.schedulers,
                 "shoal-scheduler ADDR[,ADDR...] (HOST:PORT): join the swarm. Each task goes to "
                 "one of them by rendezvous hash of its id; the host announces to all")
      ->delimiter(',');
  app.add_option("--advertise-addr", f.advertise_addr,
                 "HOST:PORT other daemons use to reach this piece server (default: "
                 "--peer-listen unless it binds 0.0.0.0)");
  app.add_option("--host-id", f.host_id,
                 "This host's id in the swarm (default: hostname + hash of --data-dir)");
  app.add_option("--zone", f.zone, "Zone or rack label (parents in the same zone are preferred)");
  app.add_flag("--seed", f.seed, "This host is a seed peer (preferred source and parent)");
  app.add_option("--upload-rate-limit", f.upload_rate_limit,
                 "Bytes per second for uploads to other daemons (e.g. 25MiB); 0 = unlimited")
      ->capture_default_str();
  app.add_option("--link-rate", f.link_rate,
                 "Bytes per second of this host's network link (e.g. 1250MB for 10 Gbit/s), told "
                 "to the scheduler: it elects the fastest peer as a blob's source; 0 = not told")
      ->capture_default_str();
  app.add_option("--upload-slots", f.upload_slots,
                 "Concurrent piece uploads; more requests get 503 at once. Fewer concurrent "
                 "uploads move each piece sooner (the link is shared by fewer)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_flag("--no-back-to-source", f.no_back_to_source,
               "Never read the registry unless the scheduler elects this host as the source "
               "(a download fails when the scheduler cannot be reached)");
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!shoal::init_logging(f.log_level)) return fail("unknown --log-level '" + f.log_level + "'");
  auto log = shoal::logger("shoald");

  auto high = shoal::storage::watermark::parse(f.gc_high);
  if (!high) return fail("--gc-high-watermark: " + high.error().message);
  auto low = shoal::storage::watermark::parse(f.gc_low);
  if (!low) return fail("--gc-low-watermark: " + low.error().message);
  auto rate = shoal::parse_bytes(f.download_rate_limit);
  if (!rate) return fail("--download-rate-limit: " + rate.error().message);
  auto mirror_ep = shoal::http::parse_endpoint(f.mirror_listen);
  if (!mirror_ep) return fail("--mirror-listen: " + mirror_ep.error().message);
  auto admin_ep = shoal::http::parse_endpoint(f.admin_listen);
  if (!admin_ep) return fail("--admin-listen: " + admin_ep.error().message);
  std::optional<boost::asio::ip::tcp::endpoint> api_ep;
  if (!f.api_listen.empty()) {
    auto ep = shoal::http::parse_endpoint(f.api_listen);
    if (!ep) return fail("--api-listen: " + ep.error().message);
    api_ep = *ep;
  }
  auto peer_ep = shoal::http::parse_endpoint(f.peer_listen);
  if (!peer_ep) return fail("--peer-listen: " + peer_ep.error().message);
  auto up_rate = shoal::parse_bytes(f.upload_rate_limit);
  if (!up_rate) return fail("--upload-rate-limit: " + up_rate.error().message);
  auto link_rate = shoal::parse_bytes(f.link_rate);
  if (!link_rate) return fail("--link-rate: " + link_rate.error().message);
  const bool swarm_mode = !f.schedulers.empty();
  if (swarm_mode) {
    // HOST may be a DNS name (gRPC resolves it; e.g. a StatefulSet pod's
    // name behind a headless Service), so only the shape is checked here.
    for (const auto& a : f.schedulers) {
      auto colon = a.rfind(':');
      bool port_ok = colon != std::string::npos && colon + 1 < a.size() &&
                     a.find_first_not_of("0123456789", colon + 1) == std::string::npos &&
                     a.size() - colon - 1 <= 5 && std::stoul(a.substr(colon + 1)) <= 65535;
      if (!port_ok || colon == 0 || a.find_first_of("/ ") != std::string::npos)
        return fail("--scheduler: '" + a + "' is not HOST:PORT");
    }
    if (f.advertise_addr.empty()) {
      if (peer_ep->address().is_unspecified())
        return fail("--advertise-addr is needed with --scheduler when --peer-listen binds " +
                    f.peer_listen + " (other daemons need an address they can reach)");
      f.advertise_addr = f.peer_listen;
    } else if (auto ep = shoal::http::parse_endpoint(f.advertise_addr); !ep) {
      return fail("--advertise-addr: " + ep.error().message);
    }
    if (f.host_id.empty()) {
      char name[256] = {};
      gethostname(name, sizeof(name) - 1);
      std::error_code ec;
      auto abs = std::filesystem::absolute(f.data_dir, ec).lexically_normal().string();
      f.host_id = std::string(name) + "-" + shoal::sha256_hex(abs).substr(0, 8);
    }
  }

  shoal::storage::options sopts;
  sopts.data_dir = f.data_dir;
  sopts.gc_high = *high;
  sopts.gc_low = *low;
  auto store = shoal::storage::store::open(sopts);
  if (!store) return fail(store.error().message);

  shoal::metrics::registry reg;
  auto& disk = reg.add_gauge("shoal_storage_disk_bytes", "Bytes of content in the piece cache").with();
  auto& evictions =
      reg.add_counter("shoal_storage_gc_evictions_total", "Tasks evicted by GC since start").with();
  auto& fs_size = reg.add_gauge("shoal_storage_filesystem_size_bytes",
                                "Size of the filesystem holding --data-dir").with();
  auto& fs_free = reg.add_gauge("shoal_storage_filesystem_free_bytes",
                                "Bytes available to shoald on the filesystem holding --data-dir")
                      .with();
  auto& peers_active = reg.add_gauge("shoal_peers_active",
                                     "Parent daemons that downloads in progress fetch from now")
                           .with();
  reg.add_gauge("shoal_upload_slots", "Concurrent piece uploads allowed (--upload-slots)")
      .with()
      .set(swarm_mode ? f.upload_slots : 0);
  bool ready = false;

  // Before the first gRPC object and outliving the last (see grpc_library.h).
  std::optional<shoal::grpc_library> grpc_lib;
  if (swarm_mode) grpc_lib.emplace();
  {
    asio::io_context io;
    shoal::source::options src_opts;
    src_opts.insecure_registries = f.insecure_registries;
    shoal::source::registry_client origin(io.get_executor(), src_opts);
    shoal::transfer::options topts;
    topts.download_rate_limit = *rate;
    if (swarm_mode) {
      // Children verify pieces against the source's digests; sooner commits
      // mean sooner PieceFinished reports, so children can start earlier.
      topts.piece_digests = true;
      topts.commit_interval = std::chrono::milliseconds(50);
    }
    shoal::transfer::task_manager tasks(io.get_executor(), **store, origin, reg, topts);
    shoal::upload::options uopts;
    uopts.rate_limit = *up_rate;
    uopts.slots = f.upload_slots;
    std::optional<shoal::upload::piece_server> pieces;
    std::optional<shoal::http::server> peer_srv;
    std::optional<shoal::transfer::scheduler_client> sched;
    std::optional<shoal::transfer::swarm> swarm;
    std::optional<shoal::transfer::preheater> preheat;
    if (swarm_mode) {
      pieces.emplace(tasks, reg, uopts);
      peer_srv.emplace(io.get_executor(), "peer");
      if (auto r = peer_srv->listen(*peer_ep, "--peer-listen"); !r) return fail(r.error().message);
      peer_srv->start([&pieces](shoal::http::request req, boost::beast::tcp_stream& s) {
        return pieces->handle(std::move(req), s);
      });
      char hostname[256] = {};
      gethostname(hostname, sizeof(hostname) - 1);
      auto host_info = [&, hostname = std::string(hostname)] {
        shoal::v1::Host h;
        h.set_id(f.host_id);
        h.set_hostname(hostname);
        h.set_peer_addr(f.advertise_addr);
        h.set_zone(f.zone);
        h.set_seed(f.seed);
        h.set_upload_rate_limit(*up_rate);
        h.set_download_rate_limit(*rate);
        h.set_link_rate(*link_rate);
        h.set_upload_slots(pieces->slots());
        h.set_upload_slots_in_use(pieces->slots_in_use());
        h.set_upload_rate(pieces->recent_rate());
        struct statvfs vfs {};
        if (statvfs(f.data_dir.c_str(), &vfs) == 0) {
          h.set_disk_total_bytes(std::uint64_t{vfs.f_blocks} * vfs.f_frsize);
          h.set_disk_free_bytes(std::uint64_t{vfs.f_bavail} * vfs.f_frsize);
        }
        h.set_cache_bytes((*store)->disk_usage());
        h.set_version("0.1");
        return h;
      };
      sched.emplace(io.get_executor(), f.schedulers, host_info);
      shoal::transfer::swarm_options wopts;
      wopts.host_id = f.host_id;
      wopts.back_to_source = !f.no_back_to_source;
      swarm.emplace(tasks, *sched, reg, wopts);
      if (f.seed) {
        // Seeds take preheat jobs from the scheduler (scheduler/README.md "Preheat").
        shoal::transfer::preheat_options popts;
        popts.host_id = f.host_id;
        preheat.emplace(io.get_executor(), tasks, origin, *sched, popts);
        sched->on_preheat([&preheat](std::size_t i, const shoal::v1::PreheatAssignment& a) {
          preheat->on_assignment(i, a);
        });
      }
      sched->start();
    }
    shoal::mirror::options mopts;
    mopts.default_registry = f.default_registry;
    mopts.prefetch = !f.no_prefetch;
    shoal::mirror::mirror mirror(origin, tasks, **store, reg, mopts);

    // The local API: routes by area (daemon/api/routes.h), unix socket + optional TCP.
    shoal::api::pull_manager pulls(io.get_executor(), origin, tasks, **store,
                                   std::filesystem::path(f.data_dir) / "content", reg);
    shoal::api::router api_routes;
    shoal::api::add_pull_routes(api_routes, pulls);
    shoal::api::add_task_routes(api_routes, tasks, **store);
    shoal::api::add_file_routes(api_routes, tasks, origin);
    shoal::api::server api_srv(io.get_executor(), api_routes);
    if (auto r = api_srv.listen_unix(f.api_socket); !r) return fail(r.error().message);
    if (api_ep) {
      if (auto r = api_srv.listen_tcp(*api_ep); !r) return fail(r.error().message);
      if (!api_ep->address().is_loopback())
        log->warn("--api-listen {} is not a loopback address: anyone who reaches it can write "
                  "model directories as shoald's user",
                  f.api_listen);
    }

    shoal::http::server mirror_srv(io.get_executor(), "mirror");
    if (auto r = mirror_srv.listen(*mirror_ep, "--mirror-listen"); !r) return fail(r.error().message);
    shoal::http::server admin_srv(io.get_executor(), "admin");
    if (auto r = admin_srv.listen(*admin_ep, "--admin-listen"); !r) return fail(r.error().message);

    mirror_srv.start([&mirror](shoal::http::request req, boost::beast::tcp_stream& s) {
      return mirror.handle(std::move(req), s);
    });
    std::function<void()> refresh = [&] {
      disk.set(static_cast<double>((*store)->disk_usage()));
      evictions.inc(static_cast<double>((*store)->evictions_total()) - evictions.value());
      struct statvfs vfs {};
      if (statvfs(f.data_dir.c_str(), &vfs) == 0) {
        fs_size.set(static_cast<double>(std::uint64_t{vfs.f_blocks} * vfs.f_frsize));
        fs_free.set(static_cast<double>(std::uint64_t{vfs.f_bavail} * vfs.f_frsize));
      }
      peers_active.set(swarm ? static_cast<double>(swarm->active_parents()) : 0.0);
    };
    admin_srv.start([&](shoal::http::request req, boost::beast::tcp_stream& s) {
      return admin(std::move(req), s, reg, refresh, ready);
    });
    api_srv.start();

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      log->info("signal {}: shutting down", sig);
      ready = false;
      mirror_srv.stop();
      admin_srv.stop();
      api_srv.stop();
      pulls.stop();
      mirror.stop();
      if (peer_srv) peer_srv->stop();
      if (preheat) preheat->stop();
      if (swarm) swarm->stop();
      if (sched) sched->stop();
      tasks.stop();
      // Let cancelled coroutines unwind, then stop the loop.
      asio::post(io, [&io] { io.stop(); });
    });
    ready = true;
    log->info("shoald ready: mirror {} admin {} api {}{} data {} default registry '{}'",
              f.mirror_listen, f.admin_listen, f.api_socket,
              api_ep ? " and " + f.api_listen : std::string(), f.data_dir, f.default_registry);
    if (swarm_mode)
      log->info("swarm: host {} peer server {} (advertised {}), {} scheduler(s)", f.host_id,
                f.peer_listen, f.advertise_addr, f.schedulers.size());
    io.run();
    if (sched) sched->leave_blocking();
  }
  if (grpc_lib && !grpc_lib->shutdown(std::chrono::seconds(5)))
    log->warn("gRPC had not finished shutting down 5 s after shoald's last channel closed");
  log->info("shoald stopped");
  return 0;
}
