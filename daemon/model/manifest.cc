#include "daemon/model/manifest.h"

#include <boost/json.hpp>
#include <charconv>
#include <ctime>

namespace shoal::model {

namespace json = boost::json;

const char* format_name(layer_format f) {
  switch (f) {
    case layer_format::raw: return "raw";
    case layer_format::tar: return "tar";
    case layer_format::tar_gzip: return "tar+gzip";
    case layer_format::tar_zstd: return "tar+zstd";
  }
  return "?";
}

namespace {
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool modelpack_type(std::string_view t) {
  return t == kModelArtifactType || t == kLegacyModelArtifactType || t == kConfigType ||
         t == kLegacyConfigType;
}

result<std::string> string_field(const json::object& o, std::string_view key,
                                 std::string_view where, bool required) {
  auto* v = o.if_contains(key);
  if (!v) {
    if (required)
      return error(errc::invalid_argument,
                   "manifest: " + std::string(where) + " has no \"" + std::string(key) + "\"");
    return std::string();
  }
  if (!v->is_string())
    return error(errc::invalid_argument, "manifest: " + std::string(where) + "." +
                                             std::string(key) + " is not a string");
  return std::string(v->as_string());
}

result<std::uint64_t> size_field(const json::object& o, std::string_view where) {
  auto* v = o.if_contains("size");
  if (!v) return error(errc::invalid_argument, "manifest: " + std::string(where) + " has no size");
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
  return error(errc::invalid_argument,
               "manifest: " + std::string(where) + ".size is not a non-negative integer");
}
}  // namespace

layer_format format_of(std::string_view mt) {
  if (ends_with(mt, ".tar")) return layer_format::tar;
  if (ends_with(mt, "tar+gzip") || ends_with(mt, "tar.gzip") || ends_with(mt, "+gzip"))
    return layer_format::tar_gzip;
  if (ends_with(mt, "tar+zstd") || ends_with(mt, "+zstd")) return layer_format::tar_zstd;
  return layer_format::raw;
}

std::optional<std::int64_t> parse_rfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    if (pos + len > s.size()) return false;
    auto [p, ec] = std::from_chars(s.data() + pos, s.data() + pos + len, out);
    return ec == std::errc() && p == s.data() + pos + len;
  };
  int Y, M, D, h, m, sec;
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
      s[13] != ':' || s[16] != ':')
    return std::nullopt;
  if (!num(0, 4, Y) || !num(5, 2, M) || !num(8, 2, D) || !num(11, 2, h) || !num(14, 2, m) ||
      !num(17, 2, sec))
    return std::nullopt;
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return std::nullopt;
  std::size_t pos = 19;
  std::int64_t frac_ns = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    std::int64_t scale = 100000000;
    std::size_t digits = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (scale > 0) frac_ns += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
      ++digits;
    }
    if (digits == 0) return std::nullopt;
  }
  std::int64_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (pos + 6 != s.size() || s[pos + 3] != ':' || !num(pos + 1, 2, oh) || !num(pos + 4, 2, om))
      return std::nullopt;
    offset = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  // days from civil (Howard Hinnant's algorithm)
  int y = Y - (M <= 2);
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (M + (M > 2 ? -3 : 9)) + 2) / 5 + D - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const std::int64_t days = std::int64_t{era} * 146097 + static_cast<std::int64_t>(doe) - 719468;
  const std::int64_t secs = days * 86400 + h * 3600 + m * 60 + sec - offset;
  return secs * 1000000000 + frac_ns;
}

result<file_metadata> parse_file_metadata(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return error(errc::invalid_argument, "file metadata annotation is not a JSON object");
  file_metadata out;
  const auto& o = v.as_object();
  if (auto* mode = o.if_contains("mode")) {
    if (mode->is_uint64()) out.mode = static_cast<std::uint32_t>(mode->as_uint64() & 07777);
    else if (mode->is_int64() && mode->as_int64() >= 0)
      out.mode = static_cast<std::uint32_t>(mode->as_int64() & 07777);
    else
      return error(errc::invalid_argument, "file metadata: mode is not a number");
  }
  if (auto* mt = o.if_contains("mtime")) {
    if (!mt->is_string())
      return error(errc::invalid_argument, "file metadata: mtime is not an RFC 3339 string");
    auto t = parse_rfc3339(mt->as_string());
    if (!t)
      return error(errc::invalid_argument,
                   "file metadata: mtime '" + std::string(mt->as_string()) + "' is not RFC 3339");
    out.mtime_ns = *t;
  }
  return out;
}

result<std::string> safe_relative_path(std::string_view path) {
  auto bad = [&](const char* why) {
    return error(errc::invalid_argument,
                 "unsafe path '" + std::string(path) + "': " + why +
                     " (a model's files must stay inside the output directory)");
  };
  if (path.empty()) return bad("empty");
  if (path.find('\0') != std::string_view::npos) return bad("contains NUL");
  if (path.front() == '/') return bad("absolute path");
  if (path.size() > 4096) return bad("longer than 4096 bytes");
  std::string out;
  std::size_t i = 0;
  while (i <= path.size()) {
    auto j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    auto comp = path.substr(i, j - i);
    if (comp == "..") return bad("contains '..'");
    if (!comp.empty() && comp != ".") {
      if (comp.size() > 255) return bad("a component is longer than 255 bytes");
      if (!out.empty()) out += '/';
      out += comp;
    }
    i = j + 1;
  }
  if (out.empty()) return bad("names the directory itself");
  return out;
}

bool looks_like_modelpack(std::string_view media_type, std::string_view body) {
  if (media_type.find("index") != std::string_view::npos) return false;
  // cheap pre-check before parsing
  if (body.find("vnd.cncf.model.") == std::string_view::npos &&
      body.find("vnd.cnai.model.") == std::string_view::npos)
    return false;
  auto m = parse_manifest(body);
  return m && m->is_modelpack;
}

result<manifest> parse_manifest(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return error(errc::invalid_argument, "manifest is not valid JSON: " + ec.message());
  if (!v.is_object()) return error(errc::invalid_argument, "manifest is not a JSON object");
  const auto& o = v.as_object();
  manifest m;
  auto mt = string_field(o, "mediaType", "manifest", false);
  if (!mt) return std::move(mt).error();
  m.media_type = *mt;
  if (o.if_contains("manifests") || m.media_type.find("index") != std::string::npos ||
      m.media_type.find("manifest.list") != std::string::npos)
    return error(errc::unsupported,
                 "the reference names an image index, not a model manifest (give the digest "
                 "of one of its manifests)");
  auto at = string_field(o, "artifactType", "manifest", false);
  if (!at) return std::move(at).error();
  m.artifact_type = *at;
  auto* cfg = o.if_contains("config");
  if (!cfg || !cfg->is_object()) return error(errc::invalid_argument, "manifest has no config");
  {
    const auto& c = cfg->as_object();
    auto cmt = string_field(c, "mediaType", "config", true);
    if (!cmt) return std::move(cmt).error();
    m.config_media_type = *cmt;
    auto cd = string_field(c, "digest", "config", true);
    if (!cd) return std::move(cd).error();
    auto d = parse_digest(*cd);
    if (!d) return error(errc::invalid_argument, "manifest: config.digest: " + d.error().message);
    m.config = *d;
    auto cs = size_field(c, "config");
    if (!cs) return std::move(cs).error();
    m.config_size = *cs;
  }
  m.is_modelpack = modelpack_type(m.artifact_type) || modelpack_type(m.config_media_type);
  auto* layers = o.if_contains("layers");
  if (!layers || !layers->is_array())
    return error(errc::invalid_argument, "manifest has no layers array");
  std::size_t i = 0;
  for (const auto& lv : layers->as_array()) {
    std::string where = "layers[" + std::to_string(i++) + "]";
    if (!lv.is_object()) return error(errc::invalid_argument, "manifest: " + where + " is not an object");
    const auto& lo = lv.as_object();
    layer l;
    auto lmt = string_field(lo, "mediaType", where, true);
    if (!lmt) return std::move(lmt).error();
    l.media_type = *lmt;
    auto ld = string_field(lo, "digest", where, true);
    if (!ld) return std::move(ld).error();
    auto d = parse_digest(*ld);
    if (!d) return error(errc::invalid_argument, "manifest: " + where + ".digest: " + d.error().message);
    l.blob = *d;
    auto ls = size_field(lo, where);
    if (!ls) return std::move(ls).error();
    l.size = *ls;
    l.format = format_of(l.media_type);
    if (auto* ann = lo.if_contains("annotations"); ann && ann->is_object()) {
      for (const auto& [k, val] : ann->as_object())
        if (val.is_string()) l.annotations[std::string(k)] = std::string(val.as_string());
    }
    for (auto key : {kFilepath, kLegacyFilepath, kTitle}) {
      auto it = l.annotations.find(std::string(key));
      if (it == l.annotations.end() || it->second.empty()) continue;
      auto p = safe_relative_path(it->second);
      if (!p) return error(errc::invalid_argument, "manifest: " + where + " (" + l.blob.str() +
                                                       "): " + p.error().message);
      l.path = *p;
      break;
    }
    for (auto key : {kFileMetadata, kLegacyFileMetadata}) {
      auto it = l.annotations.find(std::string(key));
      if (it == l.annotations.end()) continue;
      auto md = parse_file_metadata(it->second);
      if (!md) return error(errc::invalid_argument, "manifest: " + where + " (" + l.blob.str() +
                                                        "): " + md.error().message);
      l.metadata = *md;
      break;
    }
    m.layers.push_back(std::move(l));
  }
  return m;
}

}  // namespace shoal::model
