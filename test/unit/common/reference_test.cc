#include "common/reference.h"

#include <catch2/catch.hpp>
#include <string>

namespace {

const std::string kDigest =
    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

struct want {
  std::string registry, repository, tag, digest;
};

}  // namespace

TEST_CASE("parse_reference accepts valid references", "[reference]") {
  const std::pair<std::string, want> cases[] = {
      {"ubuntu", {"registry-1.docker.io", "library/ubuntu", "", ""}},
      {"ubuntu:22.04", {"registry-1.docker.io", "library/ubuntu", "22.04", ""}},
      {"bitnami/redis:7", {"registry-1.docker.io", "bitnami/redis", "7", ""}},
      {"docker.io/ubuntu", {"registry-1.docker.io", "library/ubuntu", "", ""}},
      {"index.docker.io/library/busybox:latest",
       {"registry-1.docker.io", "library/busybox", "latest", ""}},
      {"registry-1.docker.io/alpine", {"registry-1.docker.io", "library/alpine", "", ""}},
      {"127.0.0.1:5000/models/qwen:v1", {"127.0.0.1:5000", "models/qwen", "v1", ""}},
      {"localhost/foo", {"localhost", "foo", "", ""}},
      {"localhost:5000/a/b/c", {"localhost:5000", "a/b/c", "", ""}},
      {"[::1]:5000/x", {"[::1]:5000", "x", "", ""}},
      {"ghcr.io/org/img@" + kDigest, {"ghcr.io", "org/img", "", kDigest}},
      {"registry.example.com:443/team/app:1.2.3@" + kDigest,
       {"registry.example.com:443", "team/app", "1.2.3", kDigest}},
      {"quay.io/a.b/c__d/e-f/g--h_i:Tag_1", {"quay.io", "a.b/c__d/e-f/g--h_i", "Tag_1", ""}},
  };
  for (const auto& [text, w] : cases) {
    INFO("input: " << text);
    auto r = shoal::parse_reference(text);
    REQUIRE(r);
    CHECK(r->registry == w.registry);
    CHECK(r->repository == w.repository);
    CHECK(r->tag == w.tag);
    CHECK(r->digest == w.digest);
  }
}

TEST_CASE("reference::ref and str", "[reference]") {
  auto plain = shoal::parse_reference("ubuntu");
  REQUIRE(plain);
  CHECK(plain->ref() == "latest");
  CHECK(plain->str() == "registry-1.docker.io/library/ubuntu");

  auto both = shoal::parse_reference("127.0.0.1:5000/m/q:v1@" + kDigest);
  REQUIRE(both);
  CHECK(both->ref() == kDigest);
  CHECK(both->str() == "127.0.0.1:5000/m/q:v1@" + kDigest);

  // str() parses back to the same reference.
  auto again = shoal::parse_reference(plain->str());
  REQUIRE(again);
  CHECK(again->registry == plain->registry);
  CHECK(again->repository == plain->repository);
}

TEST_CASE("parse_reference rejects invalid references", "[reference]") {
  const std::string bad[] = {
      "",
      "UPPER",
      "docker.io/Library/ubuntu",
      "ubuntu:",
      "ubuntu:-bad",
      "ubuntu:has space",
      "ubuntu:" + std::string(129, 'a'),
      "ubuntu@",
      "ubuntu@sha256:abc",
      "ubuntu@md5:d41d8cd98f00b204e9800998ecf8427e",
      "/ubuntu",
      "ubuntu/",
      "a//b",
      "a/-b",
      "a/b-",
      "a/b..c",
      "a/b___c",
      "-host.com/x",
      "host.com:/x",
      "host.com:port/x",
      "host.com/",
      "example.com/" + std::string(256, 'a'),
  };
  for (const auto& text : bad) {
    INFO("input: " << text);
    auto r = shoal::parse_reference(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().is(shoal::errc::invalid_argument));
    CHECK_THAT(r.error().message, Catch::Contains(text.substr(0, 20)));
  }
}

TEST_CASE("valid_repository and valid_tag follow the distribution grammar", "[reference]") {
  CHECK(shoal::valid_repository("library/ubuntu"));
  CHECK(shoal::valid_repository("a.b_c__d-e---f/g"));
  CHECK_FALSE(shoal::valid_repository("a_.b"));
  CHECK_FALSE(shoal::valid_repository("a/../b"));
  CHECK_FALSE(shoal::valid_repository(std::string(256, 'a')));
  CHECK(shoal::valid_repository(std::string(255, 'a')));

  CHECK(shoal::valid_tag("latest"));
  CHECK(shoal::valid_tag("_x.Y-1"));
  CHECK(shoal::valid_tag(std::string(128, 'a')));
  CHECK_FALSE(shoal::valid_tag(std::string(129, 'a')));
  CHECK_FALSE(shoal::valid_tag(".x"));
  CHECK_FALSE(shoal::valid_tag(""));
}

TEST_CASE("canonical_registry_host maps Docker Hub names", "[reference]") {
  CHECK(shoal::canonical_registry_host("docker.io") == "registry-1.docker.io");
  CHECK(shoal::canonical_registry_host("index.docker.io") == "registry-1.docker.io");
  CHECK(shoal::canonical_registry_host("registry-1.docker.io") == "registry-1.docker.io");
  CHECK(shoal::canonical_registry_host("ghcr.io") == "ghcr.io");
  CHECK(shoal::canonical_registry_host("127.0.0.1:5000") == "127.0.0.1:5000");
}
