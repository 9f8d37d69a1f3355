#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "daemon/ctl/containerd_hosts.h"

namespace cc = shoal::ctl::containerd;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("shoal-ctl-test-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::chrono::system_clock::time_point at(std::time_t t) {
  return std::chrono::system_clock::from_time_t(t);
}

}  // namespace

TEST_CASE("parse_registry: host, port, scheme and _default") {
  auto a = cc::parse_registry("registry.example.com");
  REQUIRE(a);
  CHECK(a->dir == "registry.example.com");
  CHECK(a->server == "https://registry.example.com");

  auto b = cc::parse_registry("http://127.0.0.1:5000");
  REQUIRE(b);
  CHECK(b->dir == "127.0.0.1:5000");
  CHECK(b->server == "http://127.0.0.1:5000");

  auto c = cc::parse_registry("Ghcr.IO");
  REQUIRE(c);
  CHECK(c->dir == "ghcr.io");

  auto d = cc::parse_registry("_default");
  REQUIRE(d);
  CHECK(d->dir == "_default");
  CHECK(d->server.empty());

  auto hub = cc::parse_registry("docker.io");
  REQUIRE(hub);
  CHECK(hub->dir == "docker.io");
  CHECK(hub->server == "https://registry-1.docker.io");

  auto v6 = cc::parse_registry("[::1]:5000");
  REQUIRE(v6);
  CHECK(v6->server == "https://[::1]:5000");
}

TEST_CASE("parse_registry refuses values that are not a host (no path escapes)") {
  for (const char* bad : {"", "..", "../etc", "a/b", "host:0", "host:99999", "host:",
                          "ftp://host", "-bad.example", "host name", "http://", "[::1"}) {
    INFO(bad);
    auto r = cc::parse_registry(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().is(shoal::errc::invalid_argument));
    CHECK(r.error().message.find("--registry") != std::string::npos);
  }
}

TEST_CASE("parse_mirror: scheme and host:port, no path") {
  auto m = cc::parse_mirror("http://127.0.0.1:7400/");
  REQUIRE(m);
  CHECK(*m == "http://127.0.0.1:7400");
  CHECK(cc::parse_mirror("https://mirror.local")->size() > 0);
  for (const char* bad : {"127.0.0.1:7400", "http://127.0.0.1:7400/v2", "http://u:p@h:1",
                          "ftp://h:1", "http://h:1?x=y"}) {
    INFO(bad);
    CHECK_FALSE(cc::parse_mirror(bad));
  }
}

TEST_CASE("hosts_toml: server, then the mirror with pull and resolve") {
  auto u = cc::parse_registry("registry.example.com");
  auto text = cc::hosts_toml(*u, "http://127.0.0.1:7400");
  CHECK(text.find("server = \"https://registry.example.com\"\n") != std::string::npos);
  CHECK(text.find("\n[host.\"http://127.0.0.1:7400\"]\n  capabilities = [\"pull\", \"resolve\"]\n") !=
        std::string::npos);
  // the server line comes before any table (TOML: keys after a table belong to it)
  CHECK(text.find("server =") < text.find("[host."));
  // deterministic: the same input gives the same bytes
  CHECK(text == cc::hosts_toml(*u, "http://127.0.0.1:7400"));

  auto def = cc::hosts_toml(*cc::parse_registry("_default"), "http://127.0.0.1:7400");
  CHECK(def.find("server") == std::string::npos);
  CHECK(def.find("[host.\"http://127.0.0.1:7400\"]") != std::string::npos);
}

TEST_CASE("write_hosts_toml: create, unchanged, replace with a backup") {
  temp_dir tmp;
  const std::string v1 = "server = \"https://r\"\n";
  const std::string v2 = "server = \"http://r\"\n";

  auto w1 = cc::write_hosts_toml(tmp.path, "r", v1, at(1700000000));
  REQUIRE(w1);
  CHECK(w1->what == cc::outcome::created);
  CHECK(w1->path == tmp.path / "r" / "hosts.toml");
  CHECK(slurp(w1->path) == v1);

  auto w2 = cc::write_hosts_toml(tmp.path, "r", v1, at(1700000001));
  REQUIRE(w2);
  CHECK(w2->what == cc::outcome::unchanged);
  CHECK(w2->backup.empty());

  auto w3 = cc::write_hosts_toml(tmp.path, "r", v2, at(1700000002));
  REQUIRE(w3);
  CHECK(w3->what == cc::outcome::replaced);
  CHECK(w3->backup == tmp.path / "r" / "hosts.toml.bak-20231114T221322Z");
  CHECK(slurp(w3->backup) == v1);
  CHECK(slurp(w3->path) == v2);

  // a second replacement within the same second keeps both backups
  auto w4 = cc::write_hosts_toml(tmp.path, "r", v1, at(1700000002));
  REQUIRE(w4);
  CHECK(w4->backup == tmp.path / "r" / "hosts.toml.bak-20231114T221322Z-1");
  CHECK(slurp(w4->backup) == v2);

  // nothing but hosts.toml and the backups is left behind (no temporary files)
  std::size_t files = 0;
  for (auto& e : fs::directory_iterator(tmp.path / "r")) {
    (void)e;
    ++files;
  }
  CHECK(files == 3);
}

TEST_CASE("write_hosts_toml: an unwritable config path is an error naming it") {
  temp_dir tmp;
  fs::path file = tmp.path / "not-a-dir";
  std::ofstream(file) << "x";
  auto w = cc::write_hosts_toml(file, "r", "x", at(0));
  REQUIRE_FALSE(w);
  CHECK(w.error().message.find(file.string()) != std::string::npos);
}
