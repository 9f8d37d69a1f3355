#include <catch2/catch.hpp>

#include "daemon/model/filter.h"
#include "daemon/model/manifest.h"

using namespace shoal;
using namespace shoal::model;

namespace {
const std::string kD1 = "sha256:" + std::string(64, 'a');
const std::string kD2 = "sha256:" + std::string(64, 'b');
const std::string kD3 = "sha256:" + std::string(64, 'c');

std::string manifest_json(const std::string& artifact, const std::string& config_mt,
                          const std::string& layers) {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)" +
         (artifact.empty() ? std::string() : R"("artifactType":")" + artifact + R"(",)") +
         R"("config":{"mediaType":")" + config_mt + R"(","digest":")" + kD1 +
         R"(","size":12},"layers":[)" + layers + "]}";
}
}  // namespace

TEST_CASE("a ModelPack manifest is walked: formats, paths, metadata") {
  auto text = manifest_json(
      "application/vnd.cncf.model.manifest.v1+json", "application/vnd.cncf.model.config.v1+json",
      R"({"mediaType":"application/vnd.cncf.model.weight.v1.raw","digest":")" + kD2 +
          R"(","size":100,"annotations":{"org.cncf.model.filepath":"weights/model.safetensors",
          "org.cncf.model.file.metadata+json":"{\"name\":\"model.safetensors\",\"mode\":420,\"uid\":0,\"gid\":0,\"size\":100,\"mtime\":\"2025-01-02T03:04:05.5Z\",\"typeflag\":48}"}},
         {"mediaType":"application/vnd.cncf.model.weight.config.v1.tar+gzip","digest":")" + kD3 +
          R"(","size":7},
         {"mediaType":"application/vnd.cncf.model.doc.v1.tar+zstd","digest":")" + kD3 +
          R"(","size":7,"annotations":{"org.cncf.model.filepath":"./docs/"}},
         {"mediaType":"application/vnd.cncf.model.code.v1.tar","digest":")" + kD3 + R"(","size":7})");
  auto m = parse_manifest(text);
  REQUIRE(m);
  CHECK(m->is_modelpack);
  REQUIRE(m->layers.size() == 4);
  CHECK(m->layers[0].format == layer_format::raw);
  CHECK(m->layers[0].path == "weights/model.safetensors");
  CHECK(m->layers[0].size == 100);
  REQUIRE(m->layers[0].metadata.mode);
  CHECK(*m->layers[0].metadata.mode == 0644);
  REQUIRE(m->layers[0].metadata.mtime_ns);
  CHECK(*m->layers[0].metadata.mtime_ns == 1735787045LL * 1000000000 + 500000000);
  CHECK(m->layers[1].format == layer_format::tar_gzip);
  CHECK(m->layers[1].path.empty());
  CHECK(m->layers[2].format == layer_format::tar_zstd);
  CHECK(m->layers[2].path == "docs");
  CHECK(m->layers[3].format == layer_format::tar);
}

TEST_CASE("legacy cnai artifacts and title annotations are accepted") {
  auto text = manifest_json(
      "", "application/vnd.cnai.model.config.v1+json",
      R"({"mediaType":"application/vnd.cnai.model.weight.v1.raw","digest":")" + kD2 +
          R"(","size":5,"annotations":{"org.cnai.model.filepath":"a.bin"}},
         {"mediaType":"application/octet-stream","digest":")" + kD2 +
          R"(","size":5,"annotations":{"org.opencontainers.image.title":"b.bin"}})");
  auto m = parse_manifest(text);
  REQUIRE(m);
  CHECK(m->is_modelpack);
  CHECK(m->layers[0].path == "a.bin");
  CHECK(m->layers[1].path == "b.bin");
  CHECK(looks_like_modelpack("application/vnd.oci.image.manifest.v1+json", text));
}

TEST_CASE("an ordinary image is not a ModelPack; an index is refused") {
  auto img = manifest_json("", "application/vnd.oci.image.config.v1+json",
                           R"({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
                               kD2 + R"(","size":5})");
  auto m = parse_manifest(img);
  REQUIRE(m);
  CHECK_FALSE(m->is_modelpack);
  CHECK_FALSE(looks_like_modelpack("application/vnd.oci.image.manifest.v1+json", img));
  auto idx = parse_manifest(
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})");
  REQUIRE_FALSE(idx);
  CHECK(idx.error().is(errc::unsupported));
}

TEST_CASE("malformed manifests name what is wrong") {
  CHECK_FALSE(parse_manifest("not json"));
  CHECK_FALSE(parse_manifest("[]"));
  auto bad_digest = parse_manifest(manifest_json(
      "", "x", R"({"mediaType":"a","digest":"sha256:XYZ","size":1})"));
  REQUIRE_FALSE(bad_digest);
  CHECK(bad_digest.error().message.find("layers[0].digest") != std::string::npos);
  auto escape = parse_manifest(manifest_json(
      "", "x",
      R"({"mediaType":"a","digest":")" + kD2 +
          R"(","size":1,"annotations":{"org.cncf.model.filepath":"../../etc/passwd"}})"));
  REQUIRE_FALSE(escape);
  CHECK(escape.error().message.find("..") != std::string::npos);
  auto abs = parse_manifest(manifest_json(
      "", "x",
      R"({"mediaType":"a","digest":")" + kD2 +
          R"(","size":1,"annotations":{"org.cncf.model.filepath":"/etc/passwd"}})"));
  REQUIRE_FALSE(abs);
  CHECK_FALSE(parse_manifest(manifest_json("", "x", R"({"mediaType":"a","digest":")" + kD2 +
                                                         R"(","size":-1})")));
}

TEST_CASE("safe relative paths") {
  CHECK(*safe_relative_path("a/b") == "a/b");
  CHECK(*safe_relative_path("./a//b/") == "a/b");
  CHECK_FALSE(safe_relative_path(""));
  CHECK_FALSE(safe_relative_path("/a"));
  CHECK_FALSE(safe_relative_path("a/../b"));
  CHECK_FALSE(safe_relative_path(".."));
  CHECK_FALSE(safe_relative_path("./"));
  CHECK_FALSE(safe_relative_path(std::string("a\0b", 3)));
}

TEST_CASE("RFC 3339 times") {
  CHECK(*parse_rfc3339("1970-01-01T00:00:00Z") == 0);
  CHECK(*parse_rfc3339("2023-11-14T22:13:20Z") == 1700000000LL * 1000000000);
  CHECK(*parse_rfc3339("2023-11-14T23:13:20+01:00") == 1700000000LL * 1000000000);
  CHECK(*parse_rfc3339("2023-11-14T22:13:20.000000001Z") == 1700000000LL * 1000000000 + 1);
  CHECK_FALSE(parse_rfc3339("2023-11-14 22:13:20"));
  CHECK_FALSE(parse_rfc3339("2023-13-14T22:13:20Z"));
  CHECK_FALSE(parse_rfc3339("yesterday"));
}

TEST_CASE("globs") {
  CHECK(glob_match("*.json", "config.json"));
  CHECK_FALSE(glob_match("*.json", "a/config.json"));
  CHECK(glob_match("**/*.json", "a/b/config.json"));
  CHECK(glob_match("**/*.json", "config.json"));
  CHECK(glob_match("weights/**", "weights/a/b.bin"));
  CHECK(glob_match("model-?\?\?\?\?-of-00002.safetensors", "model-00001-of-00002.safetensors"));
  CHECK(glob_match("[a-c]x", "bx"));
  CHECK_FALSE(glob_match("[!a-c]x", "bx"));
  CHECK_FALSE(glob_match("a?b", "a/b"));
}

TEST_CASE("include and exclude filters") {
  auto f = path_filter::make({"*.safetensors", "config.json"}, {"*-00002-*"});
  REQUIRE(f);
  CHECK(f->selects("model-00001-of-00002.safetensors"));
  CHECK(f->selects("sub/dir/model-00001-of-00002.safetensors"));  // base-name rule
  CHECK_FALSE(f->selects("model-00002-of-00002.safetensors"));
  CHECK(f->selects("config.json"));
  CHECK_FALSE(f->selects("README.md"));
  auto none = path_filter::make({}, {"*.md"});
  REQUIRE(none);
  CHECK(none->selects("a.bin"));
  CHECK_FALSE(none->selects("docs/README.md"));
  CHECK_FALSE(path_filter::make({"[abc"}, {}));
  CHECK_FALSE(path_filter::make({""}, {}));
}
