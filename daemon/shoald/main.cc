// shoald: the node daemon. Composition root: parses flags (every flag is also
// a YAML key in --config), builds the parts, wires them, and hands them one
// shutdown signal (SIGTERM/SIGINT).

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <iostream>

#include "common/config.h"
#include "common/http.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/units.h"
#include "daemon/mirror/mirror.h"
#include "daemon/source/registry_client.h"
#include "daemon/storage/store.h"
#include "daemon/transfer/task_manager.h"

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;

namespace {

struct flags {
  std::string data_dir = "/var/lib/shoal";
  std::string mirror_listen = "127.0.0.1:7400";
  std::string peer_listen = "0.0.0.0:7401";
  std::string admin_listen = "127.0.0.1:7402";
  std::string api_socket = "/run/shoal/shoald.sock";
  std::vector<std::string> insecure_registries;
  std::string default_registry;
  std::string gc_high = "90%";
  std::string gc_low = "80%";
  std::string download_rate_limit = "0";
  std::string log_level = "info";
};

int fail(const std::string& what) {
  std::cerr << "shoald: " << what << "\n";
  return 2;
}

// /healthz, /readyz and /metrics on the admin listener.
asio::awaitable<bool> admin(shoal::http::request req, boost::beast::tcp_stream& stream,
                            shoal::metrics::registry& reg, shoal::storage::store& store,
                            shoal::metrics::gauge& disk, shoal::metrics::gauge& evictions,
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
    disk.set(static_cast<double>(store.disk_usage()));
    evictions.set(static_cast<double>(store.evictions_total()));
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
  if (auto peer = shoal::http::parse_endpoint(f.peer_listen); !peer)
    return fail("--peer-listen: " + peer.error().message);

  shoal::storage::options sopts;
  sopts.data_dir = f.data_dir;
  sopts.gc_high = *high;
  sopts.gc_low = *low;
  auto store = shoal::storage::store::open(sopts);
  if (!store) return fail(store.error().message);

  shoal::metrics::registry reg;
  auto& disk = reg.add_gauge("shoal_storage_disk_bytes", "Bytes of content in the piece cache").with();
  auto& evictions =
      reg.add_gauge("shoal_storage_gc_evictions", "Tasks evicted by GC since start").with();
  bool ready = false;

  {
    asio::io_context io;
    shoal::source::options src_opts;
    src_opts.insecure_registries = f.insecure_registries;
    shoal::source::registry_client origin(io.get_executor(), src_opts);
    shoal::transfer::options topts;
    topts.download_rate_limit = *rate;
    shoal::transfer::task_manager tasks(io.get_executor(), **store, origin, reg, topts);
    shoal::mirror::options mopts;
    mopts.default_registry = f.default_registry;
    shoal::mirror::mirror mirror(origin, tasks, **store, reg, mopts);

    shoal::http::server mirror_srv(io.get_executor(), "mirror");
    if (auto r = mirror_srv.listen(*mirror_ep, "--mirror-listen"); !r) return fail(r.error().message);
    shoal::http::server admin_srv(io.get_executor(), "admin");
    if (auto r = admin_srv.listen(*admin_ep, "--admin-listen"); !r) return fail(r.error().message);

    mirror_srv.start([&mirror](shoal::http::request req, boost::beast::tcp_stream& s) {
      return mirror.handle(std::move(req), s);
    });
    admin_srv.start([&](shoal::http::request req, boost::beast::tcp_stream& s) {
      return admin(std::move(req), s, reg, **store, disk, evictions, ready);
    });

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      log->info("signal {}: shutting down", sig);
      ready = false;
      mirror_srv.stop();
      admin_srv.stop();
      tasks.stop();
      // Let cancelled coroutines unwind, then stop the loop.
      asio::post(io, [&io] { io.stop(); });
    });
    ready = true;
    log->info("shoald ready: mirror {} admin {} data {} default registry '{}'",
              f.mirror_listen, f.admin_listen, f.data_dir, f.default_registry);
    io.run();
  }
  log->info("shoald stopped");
  return 0;
}
