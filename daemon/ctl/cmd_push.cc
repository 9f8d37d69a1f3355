// shoalctl push DIR REF: packages a model directory as a ModelPack artifact
// (daemon/model/pack.h) and uploads it with chunked, resumable uploads
// (daemon/source/uploader.h). Blobs the registry already has are skipped.

// GCC 12 reports -Wmismatched-new-delete on every Asio awaitable frame: a known
// false positive (the frame's class-specific operator new/delete do match).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>

#include "common/reference.h"
#include "common/units.h"
#include "daemon/ctl/command.h"
#include "daemon/ctl/credentials.h"
#include "daemon/model/pack.h"
#include "daemon/source/uploader.h"

namespace {

namespace asio = boost::asio;
using shoal::format_bytes;

struct push_flags {
  std::string dir;
  std::string ref;
  bool plain_http = false;
  std::string username;
  std::string password;
  bool password_stdin = false;
  std::string chunk_size = "64MiB";
  std::string name;
  std::string state_dir;
  bool quiet = false;
};

std::string default_state_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::string(x) + "/shoal/push";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/shoal/push";
  return {};
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}


asio::awaitable<int> do_push(push_flags f, shoal::reference ref, shoal::source::upload_options uo) {
  using namespace shoal;
  const auto t0 = std::chrono::steady_clock::now();
  model::pack_options po;
  po.name = f.name;
  if (!f.quiet)
    po.on_hashed = [](const model::packed_file& pf) {
      std::cerr << "  hashed    " << pf.rel << " (" << format_bytes(pf.size) << ")\n";
    };
  if (!f.quiet) std::cerr << "packaging " << f.dir << "\n";
  auto pkg = model::pack(f.dir, po);
  if (!pkg) {
    std::cerr << "shoalctl push: " << pkg.error().message << "\n";
    co_return ctl::exit_failure;
  }
  for (const auto& s : pkg->skipped)
    if (!f.quiet) std::cerr << "  skipped   " << s << " (hidden)\n";

  source::uploader up(co_await asio::this_coro::executor, uo);
  const source::upload_target target{ref.registry, ref.repository};
  std::uint64_t sent = 0, skipped = 0, uploaded_blobs = 0, existing_blobs = 0;
  auto report = [&](const std::string& what, std::uint64_t size,
                    const result<source::upload_stats>& r, double secs) {
    if (r->outcome == source::upload_outcome::existed) {
      ++existing_blobs;
      skipped += size;
      if (!f.quiet) std::cerr << "  exists    " << what << "\n";
      return;
    }
    ++uploaded_blobs;
    sent += r->bytes_sent;
    if (f.quiet) return;
    std::cerr << "  uploaded  " << what << " (" << format_bytes(size) << " in "
              << static_cast<int>(secs * 10) / 10.0 << " s";
    if (r->resumed_from > 0) std::cerr << ", resumed at " << format_bytes(r->resumed_from);
    if (r->restarts > 0) std::cerr << ", restarted " << r->restarts << "x";
    std::cerr << ")\n";
  };
  for (const auto& pf : pkg->files) {
    const auto t = std::chrono::steady_clock::now();
    source::blob_body body;
    body.file = pf.path;
    auto r = co_await up.push_blob(target, pf.dgst, pf.size, body);
    if (!r) {
      std::cerr << "shoalctl push: " << pf.rel << ": " << r.error().message << "\n";
      co_return ctl::exit_failure;
    }
    report(pf.rel, pf.size, r, seconds_since(t));
  }
  {
    const auto t = std::chrono::steady_clock::now();
    source::blob_body body;
    body.bytes = pkg->config;
    auto r = co_await up.push_blob(target, pkg->config_digest, pkg->config.size(), body);
    if (!r) {
      std::cerr << "shoalctl push: config: " << r.error().message << "\n";
      co_return ctl::exit_failure;
    }
    report("(config)", pkg->config.size(), r, seconds_since(t));
  }
  const std::string tag = ref.tag.empty() ? "latest" : ref.tag;
  auto m = co_await up.put_manifest(target, tag, std::string(model::kManifestMediaType),
                                    pkg->manifest);
  if (!m) {
    std::cerr << "shoalctl push: " << m.error().message << "\n";
    co_return ctl::exit_failure;
  }
  if (*m != pkg->manifest_digest.str()) {
    std::cerr << "shoalctl push: the registry stored the manifest as " << *m << " but it hashes to "
              << pkg->manifest_digest.str() << "\n";
    co_return ctl::exit_failure;
  }
  if (!f.quiet)
    std::cerr << "pushed " << pkg->files.size() << " files, " << format_bytes(pkg->total_bytes)
              << ": " << uploaded_blobs << " blobs uploaded (" << format_bytes(sent) << " sent), "
              << existing_blobs << " already there (" << format_bytes(skipped) << "), in "
              << static_cast<int>(seconds_since(t0) * 10) / 10.0 << " s\n";
  std::cout << ref.registry << "/" << ref.repository << ":" << tag << "@" << *m << "\n";
  co_return ctl::exit_ok;
}

int run_push(const push_flags& f) {
  using namespace shoal;
  auto ref = parse_reference(f.ref);
  if (!ref) {
    std::cerr << "shoalctl push: " << f.ref << ": " << ref.error().message << "\n";
    return ctl::exit_usage;
  }
  if (!ref->digest.empty()) {
    std::cerr << "shoalctl push: " << f.ref
              << ": push needs a tag, not a digest (the digest comes from the content)\n";
    return ctl::exit_usage;
  }
  auto chunk = parse_bytes(f.chunk_size);
  if (!chunk || *chunk < 4096) {
    std::cerr << "shoalctl push: --chunk-size " << f.chunk_size << ": "
              << (chunk ? "at least 4KiB" : chunk.error().message) << "\n";
    return ctl::exit_usage;
  }
  source::upload_options uo;
  uo.chunk_size = *chunk;
  if (f.plain_http) uo.insecure_registries.push_back(ref->registry);
  std::string user = f.username, pass = f.password;
  if (user.empty())
    if (const char* u = std::getenv("SHOAL_REGISTRY_USERNAME")) user = u;
  if (f.password_stdin) {
    std::getline(std::cin, pass);
  } else if (pass.empty()) {
    if (const char* p = std::getenv("SHOAL_REGISTRY_PASSWORD")) pass = p;
  }
  if (!user.empty()) uo.authorization = shoal::ctl::basic_authorization(user, pass);
  uo.state_dir = f.state_dir.empty() ? default_state_dir() : f.state_dir;
  if (f.state_dir == "none") uo.state_dir.clear();

  asio::io_context io;
  int code = ctl::exit_failure;
  std::exception_ptr failure;
  asio::co_spawn(io, do_push(f, *ref, uo), [&](std::exception_ptr e, int c) {
    failure = e;
    code = c;
  });
  io.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::cerr << "shoalctl push: " << e.what() << "\n";
      return ctl::exit_failure;
    }
  }
  return code;
}

shoal::ctl::registration reg{"push", [](CLI::App& app, shoal::ctl::runner& run) {
  auto f = std::make_shared<push_flags>();
  auto* sub = app.add_subcommand(
      "push", "Package a model directory as a ModelPack artifact and upload it to a registry");
  sub->add_option("DIR", f->dir, "Model directory (every file becomes one raw layer)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("REF", f->ref, "Where to push: registry[:port]/repository:tag")->required();
  sub->add_flag("--plain-http", f->plain_http,
                "Talk to the registry over plain http (local or lab registries)");
  sub->add_option("--username", f->username,
                  "Registry user (default: $SHOAL_REGISTRY_USERNAME)");
  sub->add_option("--password", f->password,
                  "Registry password (default: $SHOAL_REGISTRY_PASSWORD; prefer --password-stdin)");
  sub->add_flag("--password-stdin", f->password_stdin, "Read the password from standard input");
  sub->add_option("--chunk-size", f->chunk_size, "Bytes per upload request (PATCH)")
      ->capture_default_str();
  sub->add_option("--name", f->name, "Model name in the config (default: the directory's name)");
  sub->add_option("--state-dir", f->state_dir,
                  "Where upload URLs are kept so an interrupted push resumes "
                  "(default: $XDG_CACHE_HOME/shoal/push or ~/.cache/shoal/push; 'none' = off)");
  sub->add_flag("-q,--quiet", f->quiet, "Print only the pushed reference");
  run = [f] { return run_push(*f); };
}};

}  // namespace
