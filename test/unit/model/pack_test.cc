// Push packaging: classification, config and manifest from a temp directory.

#include <sys/stat.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "daemon/model/pack.h"

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace shoal::model;

namespace {

struct temp_dir {
  temp_dir() {
    path = fs::temp_directory_path() / ("shoal-pack-test-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  void write(const std::string& rel, const std::string& data) {
    fs::create_directories((path / rel).parent_path());
    std::ofstream(path / rel, std::ios::binary) << data;
  }
  fs::path path;
  static inline int counter = 0;
};

}  // namespace

TEST_CASE("pack: files are classified the way model packagers do") {
  CHECK(classify("model-00001-of-00004.safetensors").kind == file_kind::weight);
  CHECK(classify("sub/dir/pytorch_model.bin").kind == file_kind::weight);
  CHECK(classify("q4.GGUF").kind == file_kind::weight);
  CHECK(classify("model.onnx").kind == file_kind::weight);
  CHECK(classify("config.json").kind == file_kind::weight_config);
  CHECK(classify("generation_config.json").kind == file_kind::weight_config);
  CHECK(classify("tokenizer.json").kind == file_kind::weight_config);
  CHECK(classify("tokenizer.model").kind == file_kind::weight_config);
  CHECK(classify("model.safetensors.index.json").kind == file_kind::weight_config);
  CHECK(classify("README.md").kind == file_kind::doc);
  CHECK(classify("LICENSE").kind == file_kind::doc);
  CHECK(classify("LICENSE-MIT.txt").kind == file_kind::doc);
  CHECK(classify("modeling_x.py").kind == file_kind::code);
  CHECK(classify("train.parquet").kind == file_kind::dataset);
  CHECK_FALSE(classify("README.md").guessed);
  auto odd = classify("weird.xyz");
  CHECK(odd.kind == file_kind::doc);
  CHECK(odd.guessed);
  CHECK(classify("modules.json").guessed);
  CHECK(raw_media_type(file_kind::weight_config) ==
        "application/vnd.cncf.model.weight.config.v1.raw");
}

TEST_CASE("pack: a directory becomes sorted raw layers, a config and a manifest") {
  temp_dir d;
  d.write("config.json", R"({"model_type":"qwen2","torch_dtype":"bfloat16","architectures":["X"]})");
  d.write("b/model.safetensors", std::string(100000, 'w'));
  d.write("README.md", "hello\n");
  d.write(".git/HEAD", "ref: x\n");
  ::chmod((d.path / "README.md").c_str(), 0600);
  fs::create_symlink(d.path / "README.md", d.path / "linked.md");

  auto pkg = pack(d.path, {.name = "m", .on_hashed = nullptr});
  REQUIRE(pkg);
  REQUIRE(pkg->files.size() == 4);
  CHECK(pkg->files[0].rel == "README.md");
  CHECK(pkg->files[1].rel == "b/model.safetensors");
  CHECK(pkg->files[2].rel == "config.json");
  CHECK(pkg->files[3].rel == "linked.md");
  CHECK(pkg->files[0].mode == 0600);
  CHECK(pkg->skipped == std::vector<std::string>{".git"});

  auto cfg = json::parse(pkg->config).as_object();
  CHECK(cfg["descriptor"].as_object()["name"] == "m");
  CHECK(cfg["descriptor"].as_object()["family"] == "qwen2");
  CHECK(cfg["config"].as_object()["precision"] == "bfloat16");
  CHECK(cfg["config"].as_object()["format"] == "safetensors");
  CHECK(cfg["modelfs"].as_object()["diffIds"].as_array().size() == 4);

  auto man = json::parse(pkg->manifest).as_object();
  CHECK(man["artifactType"] == "application/vnd.cncf.model.manifest.v1+json");
  CHECK(man["config"].as_object()["digest"].as_string() == pkg->config_digest.str().c_str());
  auto& layers = man["layers"].as_array();
  REQUIRE(layers.size() == 4);
  auto& weight = layers[1].as_object();
  CHECK(weight["mediaType"] == "application/vnd.cncf.model.weight.v1.raw");
  CHECK(weight["size"].to_number<std::uint64_t>() == 100000);
  auto& ann = weight["annotations"].as_object();
  CHECK(ann["org.cncf.model.filepath"] == "b/model.safetensors");
  auto meta = json::parse(ann["org.cncf.model.file.metadata+json"].as_string()).as_object();
  CHECK(meta["name"] == "model.safetensors");
  CHECK(meta["size"].to_number<std::int64_t>() == 100000);

  // Same directory, same digests: a second push uploads nothing.
  auto again = pack(d.path, {.name = "m", .on_hashed = nullptr});
  REQUIRE(again);
  CHECK(again->manifest_digest == pkg->manifest_digest);
}

TEST_CASE("pack: empty directories and special files are refused with the path") {
  temp_dir d;
  auto empty = pack(d.path, {});
  REQUIRE_FALSE(empty);
  CHECK(empty.error().message.find("has no files") != std::string::npos);
  fs::create_directories(d.path / "real");
  d.write("real/x.bin", "x");
  fs::create_directory_symlink(d.path / "real", d.path / "dirlink");
  auto linked = pack(d.path, {});
  REQUIRE_FALSE(linked);
  CHECK(linked.error().message.find("symlink to a directory") != std::string::npos);
}
