#pragma once
// ModelPack manifests (DESIGN §9, reference/modelpack/): the walk from an OCI
// manifest to the files a model directory holds.
//
// Accepted: `application/vnd.cncf.model.*` media types and the older
// `application/vnd.cnai.model.*`; file paths from the layer annotations
// `org.cncf.model.filepath`, `org.cnai.model.filepath` or
// `org.opencontainers.image.title` (first found, in that order); file
// metadata (mode, mtime) from `org.cncf.model.file.metadata+json` (or the
// cnai key). Any OCI image manifest is walked the same way, so artifacts
// packed by other tools with title annotations pull too.
//
// Pure functions, no I/O: used on the I/O thread (mirror prefetch, pull jobs).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/digest.h"
#include "common/result.h"

namespace shoal::model {

inline constexpr std::string_view kModelArtifactType = "application/vnd.cncf.model.manifest.v1+json";
inline constexpr std::string_view kLegacyModelArtifactType =
    "application/vnd.cnai.model.manifest.v1+json";
inline constexpr std::string_view kConfigType = "application/vnd.cncf.model.config.v1+json";
inline constexpr std::string_view kLegacyConfigType = "application/vnd.cnai.model.config.v1+json";
inline constexpr std::string_view kFilepath = "org.cncf.model.filepath";
inline constexpr std::string_view kLegacyFilepath = "org.cnai.model.filepath";
inline constexpr std::string_view kTitle = "org.opencontainers.image.title";
inline constexpr std::string_view kFileMetadata = "org.cncf.model.file.metadata+json";
inline constexpr std::string_view kLegacyFileMetadata = "org.cnai.model.file.metadata+json";

// How a layer's bytes become files.
enum class layer_format { raw, tar, tar_gzip, tar_zstd };
const char* format_name(layer_format f);

// org.cncf.model.file.metadata+json (fields we apply; uid/gid are ignored:
// files belong to the daemon's user).
struct file_metadata {
  std::optional<std::uint32_t> mode;         // permission bits (07777)
  std::optional<std::int64_t> mtime_ns;      // since the epoch
};

struct layer {
  std::string media_type;
  digest blob;
  std::uint64_t size = 0;
  layer_format format = layer_format::raw;
  std::string path;  // from the annotations; "" when none (tar layers only)
  file_metadata metadata;
  std::map<std::string, std::string> annotations;
};

struct manifest {
  std::string media_type;
  std::string artifact_type;
  std::string config_media_type;
  digest config;
  std::uint64_t config_size = 0;
  std::vector<layer> layers;
  // artifactType or config media type is a ModelPack one (cncf or cnai).
  bool is_modelpack = false;
};

// Parses an OCI image manifest (JSON text, at most a few MiB: the caller
// limits it). Errors name the field that is wrong. An image index is refused
// with errc::unsupported (pull a manifest of it by digest).
result<manifest> parse_manifest(std::string_view json);

// Cheap check for the mirror: is this manifest body a ModelPack manifest?
bool looks_like_modelpack(std::string_view media_type, std::string_view body);

// The layer format from a media type: "...tar", "...tar+gzip" (or ".tar.gzip",
// "+gzip"), "...tar+zstd"; anything else is raw.
layer_format format_of(std::string_view media_type);

// RFC 3339 time ("2025-01-01T00:00:00Z", fractions, offsets) -> ns since epoch.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);
// Parses the file metadata annotation value (a JSON object).
result<file_metadata> parse_file_metadata(std::string_view json);

// A relative path that stays inside its directory: not empty, not absolute,
// no "..", no NUL; "./a//b/" is normalised to "a/b". Errors say why.
result<std::string> safe_relative_path(std::string_view path);

}  // namespace shoal::model
