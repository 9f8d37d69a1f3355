#pragma once
// Packaging a model directory as a ModelPack artifact (DESIGN §9,
// /work/shared/reference/modelpack): one raw layer per file, a config filled
// from config.json where present, and the OCI manifest with artifactType.
// Used by `shoalctl push`; the upload itself is daemon/source/uploader.h.
//
// The result is reproducible: the same directory (same bytes, modes, owners
// and mtimes) always gives the same config and manifest digests, so pushing
// it again uploads nothing.
//
// Threading: plain blocking file I/O; call it from a thread that may block.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/digest.h"
#include "common/result.h"

namespace shoal::model {

inline constexpr std::string_view kManifestMediaType = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kArtifactType = "application/vnd.cncf.model.manifest.v1+json";
inline constexpr std::string_view kConfigMediaType = "application/vnd.cncf.model.config.v1+json";
inline constexpr std::string_view kFilepathAnnotation = "org.cncf.model.filepath";
inline constexpr std::string_view kFileMetadataAnnotation = "org.cncf.model.file.metadata+json";
inline constexpr std::string_view kUntestedAnnotation = "org.cncf.model.file.mediatype.untested";

// What a file is, as a model packager classifies it.
enum class file_kind { weight, weight_config, doc, code, dataset };

struct classification {
  file_kind kind = file_kind::doc;
  bool guessed = false;  // no rule matched: the kind is a default (annotated "untested")
};

// Classifies a relative path ("sub/model-00001-of-00002.safetensors") by its name.
classification classify(std::string_view rel_path);
// "application/vnd.cncf.model.<kind>.v1.raw".
std::string raw_media_type(file_kind k);

// One file of the model, as one raw layer.
struct packed_file {
  std::filesystem::path path;  // on disk (symlinks resolved)
  std::string rel;             // '/'-separated path inside the model directory
  classification kind;
  digest dgst;
  std::uint64_t size = 0;
  std::uint32_t mode = 0;  // permission bits (st_mode & 07777)
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime_ns = 0;  // since the Unix epoch
  std::string media_type;
  std::string metadata_json;  // value of org.cncf.model.file.metadata+json
};

struct pack_options {
  std::string name;  // descriptor.name (default: the directory's name)
  // Called after each file is hashed (rel path, bytes), for progress output.
  std::function<void(const packed_file&)> on_hashed;
};

struct package {
  std::vector<packed_file> files;  // sorted by rel (lexicographic)
  std::string config;              // the config JSON
  digest config_digest;
  std::string manifest;  // the manifest JSON
  digest manifest_digest;
  std::uint64_t total_bytes = 0;  // files + config
  std::vector<std::string> skipped;  // hidden entries left out (rel paths)
};

// Walks dir (following symlinks to regular files; skipping names starting
// with '.'; refusing sockets, devices and links that point nowhere), hashes
// every file and builds config and manifest. Errors name the file and the
// problem (unreadable, not a regular file, an empty directory).
result<package> pack(const std::filesystem::path& dir, const pack_options& opts);

// The ModelPack config for these files: descriptor (name, family from
// config.json's model_type, createdAt = newest file mtime, so it is
// reproducible), config (architecture, format from the weight files,
// precision from torch_dtype, paramSize when config.json says), and modelfs
// (diffIds = the layers' digests, raw layers being their own uncompressed form).
// `config_json` is config.json's text ("" when there is none).
std::string build_config(const std::vector<packed_file>& files, const std::string& name,
                         std::string_view config_json);

// The OCI image manifest (artifactType ModelPack) for config and files.
std::string build_manifest(const std::vector<packed_file>& files, const digest& config_digest,
                           std::uint64_t config_size);

}  // namespace shoal::model
