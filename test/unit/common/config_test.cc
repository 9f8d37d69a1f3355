#include "common/config.h"

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// A YAML file in a fresh directory that is removed when the test ends.
class temp_yaml {
 public:
  explicit temp_yaml(const std::string& text) {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("shoal_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
    std::ofstream(path()) << text;
  }
  ~temp_yaml() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  temp_yaml(const temp_yaml&) = delete;
  temp_yaml& operator=(const temp_yaml&) = delete;
  std::string path() const { return (dir_ / "shoal.yaml").string(); }

 private:
  fs::path dir_;
};

// The options a daemon would have, wired to plain fields.
struct settings {
  std::string data_dir = "/var/lib/shoal";
  std::vector<std::string> upstreams;
  bool verbose = false;
  int workers = 1;
};

void add_options(CLI::App& app, settings& s) {
  app.add_option("--data-dir", s.data_dir, "Where pieces are stored");
  app.add_option("--upstream", s.upstreams, "Allowed upstream registry (repeatable)");
  app.add_flag("--verbose", s.verbose, "Log more");
  app.add_option("--worker_count", s.workers, "Worker threads");
}

void parse(CLI::App& app, const std::vector<std::string>& args) {
  std::vector<const char*> argv{"shoald"};
  for (const auto& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST_CASE("config: keys with '-' or '_', lists and YAML booleans", "[config]") {
  temp_yaml file(
      "data_dir: /srv/shoal\n"
      "upstream:\n"
      "  - registry-1.docker.io\n"
      "  - ghcr.io\n"
      "verbose: yes\n"
      "worker-count: 4\n");
  CLI::App app;
  settings s;
  add_options(app, s);
  shoal::add_yaml_config(app);
  parse(app, {"--config", file.path()});
  CHECK(s.data_dir == "/srv/shoal");
  CHECK(s.upstreams == std::vector<std::string>{"registry-1.docker.io", "ghcr.io"});
  CHECK(s.verbose);
  CHECK(s.workers == 4);
}

TEST_CASE("config: a command-line flag wins over the file", "[config]") {
  temp_yaml file(
      "data-dir: /from/file\n"
      "upstream: [a.example.com, b.example.com]\n"
      "verbose: false\n");
  CLI::App app;
  settings s;
  add_options(app, s);
  shoal::add_yaml_config(app);
  parse(app, {"--config", file.path(), "--data-dir", "/from/cli", "--upstream", "c.example.com",
              "--verbose"});
  CHECK(s.data_dir == "/from/cli");
  CHECK(s.upstreams == std::vector<std::string>{"c.example.com"});
  CHECK(s.verbose);
}

TEST_CASE("config: a repeated option can be given as a YAML list", "[config]") {
  temp_yaml file("upstream: [a.example.com, b.example.com, c.example.com]\n");
  CLI::App app;
  settings s;
  add_options(app, s);
  shoal::add_yaml_config(app);
  parse(app, {"--config", file.path()});
  CHECK(s.upstreams == std::vector<std::string>{"a.example.com", "b.example.com", "c.example.com"});
}

TEST_CASE("config: the default path is read when --config is not given", "[config]") {
  temp_yaml file("data-dir: /default/path\n");
  CLI::App app;
  settings s;
  add_options(app, s);
  shoal::add_yaml_config(app, file.path());
  parse(app, {});
  CHECK(s.data_dir == "/default/path");
}

TEST_CASE("config: a missing default file is fine, a missing given file is not", "[config]") {
  CLI::App app;
  settings s;
  add_options(app, s);
  shoal::add_yaml_config(app, "/nonexistent/shoal.yaml");
  parse(app, {});
  CHECK(s.data_dir == "/var/lib/shoal");

  CLI::App app2;
  settings s2;
  add_options(app2, s2);
  shoal::add_yaml_config(app2);
  CHECK_THROWS_AS(parse(app2, {"--config", "/nonexistent/shoal.yaml"}), CLI::FileError);
}

TEST_CASE("config: an unknown key fails with a message naming it and the file", "[config]") {
  temp_yaml file(
      "data-dir: /srv/shoal\n"
      "cache_sise: 10GiB\n");
  CLI::App app;
  settings s;
  add_options(app, s);
  shoal::add_yaml_config(app);
  try {
    parse(app, {"--config", file.path()});
    FAIL("parse should have thrown");
  } catch (const CLI::ConfigError& e) {
    CHECK_THAT(e.what(), Catch::Contains("cache_sise") && Catch::Contains(file.path()) &&
                             Catch::Contains("line 2"));
    // What main() would print and exit with.
    std::ostringstream out, err;
    CHECK(app.exit(e, out, err) != 0);
    CHECK_THAT(err.str(), Catch::Contains("unknown key \"cache_sise\""));
  }
}

TEST_CASE("config: bad files fail with the file named", "[config]") {
  const std::pair<std::string, std::string> cases[] = {
      {"data-dir: [unclosed\n", "not valid YAML"},
      {"- just\n- a list\n", "mapping"},
      {"data-dir:\n", "no value"},
      {"data-dir: {a: b}\n", "nested"},
      {"config: other.yaml\n", "cannot be set from a config file"},
      {"help: true\n", "cannot be set from a config file"},
      {"data-dir: /a\ndata_dir: /b\n", "more than once"},
  };
  for (const auto& [text, want] : cases) {
    INFO("yaml: " << text);
    temp_yaml file(text);
    CLI::App app;
    settings s;
    add_options(app, s);
    shoal::add_yaml_config(app);
    try {
      parse(app, {"--config", file.path()});
      FAIL("parse should have thrown");
    } catch (const CLI::ConfigError& e) {
      CHECK_THAT(e.what(), Catch::Contains(want) && Catch::Contains(file.path()));
    }
  }
}

TEST_CASE("config: an empty file sets nothing", "[config]") {
  temp_yaml file("# only a comment\n");
  CLI::App app;
  settings s;
  add_options(app, s);
  shoal::add_yaml_config(app);
  parse(app, {"--config", file.path()});
  CHECK(s.data_dir == "/var/lib/shoal");
}

TEST_CASE("config: the app's settings can be written back as YAML", "[config]") {
  CLI::App app;
  settings s;
  add_options(app, s);
  shoal::add_yaml_config(app);
  parse(app, {"--data-dir", "/x", "--upstream", "a", "--upstream", "b"});
  std::string yaml = app.config_to_str(false, false);
  CHECK_THAT(yaml, Catch::Contains("data-dir: /x") && Catch::Contains("upstream: [a, b]"));

  temp_yaml file(yaml);
  CLI::App again;
  settings s2;
  add_options(again, s2);
  shoal::add_yaml_config(again);
  parse(again, {"--config", file.path()});
  CHECK(s2.data_dir == "/x");
  CHECK(s2.upstreams == std::vector<std::string>{"a", "b"});
}
