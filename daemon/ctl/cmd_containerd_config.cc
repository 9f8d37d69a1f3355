// shoalctl containerd-config: points containerd at shoald by writing
// <config-path>/<registry>/hosts.toml for each --registry (or _default).
// Idempotent: an identical file is left alone; a different one is backed up.
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "daemon/ctl/command.h"
#include "daemon/ctl/containerd_hosts.h"

namespace {

namespace cc = shoal::ctl::containerd;

struct args {
  std::vector<std::string> registries;
  std::string mirror = "http://127.0.0.1:7400";
  std::string config_path = "/etc/containerd/certs.d";
  bool dry_run = false;
};

int run(const args& a) {
  auto mirror = cc::parse_mirror(a.mirror);
  if (!mirror) {
    std::cerr << "shoalctl containerd-config: " << mirror.error().message << "\n";
    return shoal::ctl::exit_usage;
  }
  std::vector<cc::upstream> ups;
  for (const auto& r : a.registries.empty() ? std::vector<std::string>{"_default"}
                                            : a.registries) {
    auto u = cc::parse_registry(r);
    if (!u) {
      std::cerr << "shoalctl containerd-config: " << u.error().message << "\n";
      return shoal::ctl::exit_usage;
    }
    ups.push_back(std::move(*u));
  }
  const auto now = std::chrono::system_clock::now();
  int rc = shoal::ctl::exit_ok;
  for (const auto& u : ups) {
    const std::string text = cc::hosts_toml(u, *mirror);
    if (a.dry_run) {
      std::cout << "# " << a.config_path << "/" << u.dir << "/hosts.toml\n" << text << "\n";
      continue;
    }
    auto w = cc::write_hosts_toml(a.config_path, u.dir, text, now);
    if (!w) {
      std::cerr << "shoalctl containerd-config: " << w.error().message << "\n";
      rc = shoal::ctl::exit_failure;
      continue;
    }
    switch (w->what) {
      case cc::outcome::created: std::cout << w->path.string() << ": written\n"; break;
      case cc::outcome::unchanged: std::cout << w->path.string() << ": unchanged\n"; break;
      case cc::outcome::replaced:
        std::cout << w->path.string() << ": replaced (previous file saved as "
                  << w->backup.string() << ")\n";
        break;
    }
  }
  if (!a.dry_run && rc == shoal::ctl::exit_ok)
    std::cout << "containerd reads these on each pull when its registry config_path is "
              << a.config_path << " (CRI: [plugins.\"io.containerd.grpc.v1.cri\".registry] "
              << "config_path; ctr: --hosts-dir)\n";
  return rc;
}

shoal::ctl::registration reg{"containerd-config", [](CLI::App& app, shoal::ctl::runner& run_fn) {
  auto a = std::make_shared<args>();
  auto* sub = app.add_subcommand(
      "containerd-config",
      "Write containerd hosts.toml files that pull through shoald's mirror (idempotent; a "
      "different existing file is backed up)");
  sub->add_option("--registry", a->registries,
                  "Registry to send through shoald: HOST[:PORT] (https upstream), "
                  "http://HOST[:PORT] for a plain-http one, or _default for every registry "
                  "(repeatable; default: _default)");
  sub->add_option("--mirror", a->mirror, "shoald's mirror URL")->capture_default_str();
  sub->add_option("--config-path", a->config_path,
                  "containerd's registry config_path (hosts.toml directories)")
      ->capture_default_str();
  sub->add_flag("--dry-run", a->dry_run, "Print the files instead of writing them");
  run_fn = [a] { return run(*a); };
}};

}  // namespace
