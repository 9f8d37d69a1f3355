#include "daemon/model/pack.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/sha256.h"

namespace shoal::model {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr std::size_t kHashBuffer = 4 << 20;
constexpr std::uintmax_t kMaxConfigJson = 16 << 20;  // config.json is a few KiB

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool ends_with_any(std::string_view s, std::initializer_list<std::string_view> suffixes) {
  return std::any_of(suffixes.begin(), suffixes.end(), [&](std::string_view x) { return s.ends_with(x); });
}
bool starts_with_any(std::string_view s, std::initializer_list<std::string_view> prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(), [&](std::string_view x) { return s.starts_with(x); });
}

// RFC 3339 UTC with nanoseconds, trailing zeros trimmed (Go's time.Time JSON).
std::string rfc3339(std::int64_t ns, bool fraction) {
  std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::int64_t frac = ns % 1'000'000'000;
  if (frac < 0) {
    frac += 1'000'000'000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = buf;
  if (fraction && frac != 0) {
    char f[16];
    std::snprintf(f, sizeof f, ".%09lld", static_cast<long long>(frac));
    std::string fs_(f);
    while (fs_.back() == '0') fs_.pop_back();
    out += fs_;
  }
  return out + "Z";
}

std::string errno_text(int e) { return std::strerror(e); }

// Hashes a file; checks it still has the size seen by stat.
result<digest> hash_file(const fs::path& p, std::uint64_t size) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return error(errc::io, "cannot open " + p.string() + ": " + errno_text(errno) +
                               " (check the file's permissions)");
  sha256 h;
  std::vector<char> buf(kHashBuffer);
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      return error(errc::io, "cannot read " + p.string() + ": " + errno_text(e));
    }
    if (n == 0) break;
    h.update(std::span<const char>(buf.data(), static_cast<std::size_t>(n)));
    total += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  if (total != size)
    return error(errc::io, p.string() + " changed while it was read (" + std::to_string(size) +
                               " bytes, then " + std::to_string(total) +
                               "): push a directory nothing writes to");
  auto d = parse_digest("sha256:" + h.finish_hex());
  if (!d) return std::move(d).error();
  return *d;
}

std::string metadata_json(const packed_file& f) {
  json::object o;
  o["name"] = fs::path(f.rel).filename().string();
  o["mode"] = f.mode;
  o["uid"] = f.uid;
  o["gid"] = f.gid;
  o["size"] = static_cast<std::int64_t>(f.size);
  o["mtime"] = rfc3339(f.mtime_ns, true);
  o["typeflag"] = static_cast<int>('0');  // tar's regular file
  return json::serialize(o);
}

std::string precision_of(std::string d) {
  d = lower(d);
  if (d.starts_with("torch.")) d = d.substr(6);
  if (d == "bf16") return "bfloat16";
  if (d == "fp16" || d == "half") return "float16";
  if (d == "fp32" || d == "float") return "float32";
  if (d == "fp64" || d == "double") return "float64";
  static const std::array<std::string_view, 18> known = {
      "float32", "float64", "float16", "bfloat16", "float8_e4m3", "float8_e5m2",
      "complex32", "complex64", "complex128", "int8", "int16", "int32",
      "int64", "uint8", "uint16", "uint32", "uint64", "bool"};
  for (auto k : known)
    if (d == k) return d;
  return {};
}

}  // namespace

classification classify(std::string_view rel_path) {
  const auto slash = rel_path.rfind('/');
  const std::string name = lower(slash == std::string_view::npos ? rel_path : rel_path.substr(slash + 1));
  using k = file_kind;
  if (ends_with_any(name, {".safetensors", ".bin", ".gguf", ".ggml", ".pt", ".pth", ".onnx",
                           ".ckpt", ".h5", ".msgpack", ".tflite", ".ot", ".pdparams", ".npz",
                           ".mlmodel", ".engine", ".plan"}))
    return {k::weight, false};
  if (name.ends_with("config.json") || starts_with_any(name, {"tokenizer", "vocab", "merges",
                                                               "special_tokens_map",
                                                               "added_tokens", "chat_template",
                                                               "spiece", "sentencepiece"}) ||
      ends_with_any(name, {".index.json", ".tiktoken", ".model"}))
    return {k::weight_config, false};
  if (starts_with_any(name, {"license", "licence", "copying", "notice", "readme", "usage_policy",
                             "citation"}) ||
      ends_with_any(name, {".md", ".rst", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg",
                           ".webp"}))
    return {k::doc, false};
  if (starts_with_any(name, {"requirements", "dockerfile", "makefile"}) ||
      ends_with_any(name, {".py", ".sh", ".ipynb", ".js", ".ts", ".go", ".rs", ".c", ".cc",
                           ".cpp", ".cu", ".h", ".hpp", ".java", ".rb", ".pl", ".lua", ".jl",
                           ".r", ".swift", ".kt"}))
    return {k::code, false};
  if (ends_with_any(name, {".parquet", ".csv", ".tsv", ".jsonl", ".arrow", ".tfrecord"}))
    return {k::dataset, false};
  if (ends_with_any(name, {".json", ".yaml", ".yml", ".toml", ".jinja"}))
    return {k::weight_config, true};
  if (name.ends_with(".txt")) return {k::doc, false};
  return {k::doc, true};
}

std::string raw_media_type(file_kind k) {
  switch (k) {
    case file_kind::weight: return "application/vnd.cncf.model.weight.v1.raw";
    case file_kind::weight_config: return "application/vnd.cncf.model.weight.config.v1.raw";
    case file_kind::doc: return "application/vnd.cncf.model.doc.v1.raw";
    case file_kind::code: return "application/vnd.cncf.model.code.v1.raw";
    case file_kind::dataset: return "application/vnd.cncf.model.dataset.v1.raw";
  }
  return "application/vnd.cncf.model.doc.v1.raw";
}

std::string build_config(const std::vector<packed_file>& files, const std::string& name,
                         std::string_view config_json) {
  json::object descriptor;
  json::object config;
  std::int64_t newest = 0;
  for (const auto& f : files) newest = std::max(newest, f.mtime_ns);
  descriptor["createdAt"] = rfc3339(newest, false);
  if (!config_json.empty()) {
    boost::system::error_code ec;
    auto v = json::parse(config_json, ec);
    if (!ec && v.is_object()) {
      const auto& o = v.get_object();
      if (auto* mt = o.if_contains("model_type"); mt && mt->is_string() && !mt->get_string().empty())
        descriptor["family"] = mt->get_string();
      for (const char* key : {"torch_dtype", "dtype"}) {
        if (auto* d = o.if_contains(key); d && d->is_string()) {
          if (auto p = precision_of(std::string(d->get_string())); !p.empty()) {
            config["precision"] = p;
            break;
          }
        }
      }
      if (auto* a = o.if_contains("architectures"); a && a->is_array() && !a->get_array().empty() &&
                                                     a->get_array()[0].is_string())
        config["architecture"] = "transformer";
      if (auto* q = o.if_contains("quantization_config"); q && q->is_object()) {
        if (auto* m = q->get_object().if_contains("quant_method"); m && m->is_string())
          config["quantization"] = m->get_string();
      }
    }
  }
  if (!name.empty()) descriptor["name"] = name;
  // Format: the weights' file format, the most specific one present.
  std::string format;
  int rank = 99;
  for (const auto& f : files) {
    if (f.kind.kind != file_kind::weight) continue;
    const std::string n = lower(f.rel);
    std::pair<int, const char*> cand{99, ""};
    if (n.ends_with(".safetensors")) cand = {0, "safetensors"};
    else if (n.ends_with(".gguf")) cand = {1, "gguf"};
    else if (n.ends_with(".onnx")) cand = {2, "onnx"};
    else if (ends_with_any(n, {".pt", ".pth", ".bin"})) cand = {3, "pt"};
    if (cand.first < rank) {
      rank = cand.first;
      format = cand.second;
    }
  }
  if (!format.empty()) config["format"] = format;
  json::array diff_ids;
  for (const auto& f : files) diff_ids.emplace_back(f.dgst.str());
  json::object modelfs;
  modelfs["type"] = "layers";
  modelfs["diffIds"] = std::move(diff_ids);
  json::object root;
  root["descriptor"] = std::move(descriptor);
  root["config"] = std::move(config);
  root["modelfs"] = std::move(modelfs);
  return json::serialize(root);
}

std::string build_manifest(const std::vector<packed_file>& files, const digest& config_digest,
                           std::uint64_t config_size) {
  json::object root;
  root["schemaVersion"] = 2;
  root["mediaType"] = kManifestMediaType;
  root["artifactType"] = kArtifactType;
  json::object cfg;
  cfg["mediaType"] = kConfigMediaType;
  cfg["digest"] = config_digest.str();
  cfg["size"] = config_size;
  root["config"] = std::move(cfg);
  json::array layers;
  for (const auto& f : files) {
    json::object l;
    l["mediaType"] = f.media_type;
    l["digest"] = f.dgst.str();
    l["size"] = f.size;
    json::object ann;
    ann[kFilepathAnnotation] = f.rel;
    ann[kFileMetadataAnnotation] = f.metadata_json;
    if (f.kind.guessed) ann[kUntestedAnnotation] = "true";
    l["annotations"] = std::move(ann);
    layers.emplace_back(std::move(l));
  }
  root["layers"] = std::move(layers);
  return json::serialize(root);
}

result<package> pack(const fs::path& dir, const pack_options& opts) {
  std::error_code ec;
  const fs::path root = fs::canonical(dir, ec);
  if (ec) return error(errc::invalid_argument, "model directory " + dir.string() + ": " + ec.message());
  if (!fs::is_directory(root, ec))
    return error(errc::invalid_argument, dir.string() + " is not a directory (push takes a model directory)");
  package pkg;
  std::string config_json;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec), end;
  if (ec) return error(errc::io, "cannot list " + root.string() + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return error(errc::io, "cannot list " + root.string() + ": " + ec.message());
    const fs::path p = it->path();
    const std::string rel = p.lexically_relative(root).generic_string();
    if (p.filename().string().starts_with(".")) {
      pkg.skipped.push_back(rel);
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    struct stat lst{};
    if (::lstat(p.c_str(), &lst) != 0)
      return error(errc::io, "cannot stat " + p.string() + ": " + errno_text(errno));
    if (S_ISDIR(lst.st_mode)) continue;
    struct stat st{};
    if (::stat(p.c_str(), &st) != 0)
      return error(errc::invalid_argument, p.string() + ": " + errno_text(errno) +
                                               (S_ISLNK(lst.st_mode) ? " (a dangling symlink)" : ""));
    if (S_ISDIR(st.st_mode))
      return error(errc::unsupported, p.string() +
                                          " is a symlink to a directory, which push does not "
                                          "follow (copy the directory or link its files)");
    if (!S_ISREG(st.st_mode))
      return error(errc::unsupported,
                   p.string() + " is not a regular file (sockets, FIFOs and devices cannot be pushed)");
    packed_file f;
    f.path = p;
    f.rel = rel;
    f.kind = classify(rel);
    f.media_type = raw_media_type(f.kind.kind);
    f.size = static_cast<std::uint64_t>(st.st_size);
    f.mode = st.st_mode & 07777;
    f.uid = st.st_uid;
    f.gid = st.st_gid;
    f.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    pkg.files.push_back(std::move(f));
  }
  if (pkg.files.empty())
    return error(errc::invalid_argument, "model directory " + root.string() +
                                             " has no files to push (hidden files are skipped)");
  std::sort(pkg.files.begin(), pkg.files.end(),
            [](const packed_file& a, const packed_file& b) { return a.rel < b.rel; });
  for (auto& f : pkg.files) {
    auto d = hash_file(f.path, f.size);
    if (!d) return std::move(d).error();
    f.dgst = *d;
    f.metadata_json = metadata_json(f);
    pkg.total_bytes += f.size;
    if (opts.on_hashed) opts.on_hashed(f);
    if (f.rel == "config.json" && f.size <= kMaxConfigJson) {
      std::ifstream in(f.path, std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      config_json = ss.str();
    }
  }
  const std::string name = opts.name.empty() ? root.filename().string() : opts.name;
  pkg.config = build_config(pkg.files, name, config_json);
  pkg.config_digest = *parse_digest("sha256:" + sha256_hex(pkg.config));
  pkg.total_bytes += pkg.config.size();
  pkg.manifest = build_manifest(pkg.files, pkg.config_digest, pkg.config.size());
  pkg.manifest_digest = *parse_digest("sha256:" + sha256_hex(pkg.manifest));
  return pkg;
}

}  // namespace shoal::model
