#include "daemon/model/filter.h"

namespace shoal::model {

namespace {
// Matches a bracket class at p[0] == '['; sets `len` to the class's length.
// Returns -1 when the class is unterminated.
int match_class(std::string_view p, char c, std::size_t& len) {
  std::size_t i = 1;
  bool negate = false;
  if (i < p.size() && (p[i] == '!' || p[i] == '^')) {
    negate = true;
    ++i;
  }
  bool hit = false;
  bool first = true;
  while (i < p.size() && (p[i] != ']' || first)) {
    first = false;
    char lo = p[i];
    if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
      char hi = p[i + 2];
      if (lo <= c && c <= hi) hit = true;
      i += 3;
    } else {
      if (lo == c) hit = true;
      ++i;
    }
  }
  if (i >= p.size()) return -1;
  len = i + 1;
  return (hit != negate) ? 1 : 0;
}

bool match_from(std::string_view p, std::string_view s) {
  while (!p.empty()) {
    if (p.size() >= 2 && p[0] == '*' && p[1] == '*') {
      // "**/" also matches zero directories
      std::string_view rest = p.substr(2);
      if (!rest.empty() && rest[0] == '/' && match_from(rest.substr(1), s)) return true;
      for (std::size_t i = 0; i <= s.size(); ++i)
        if (match_from(rest, s.substr(i))) return true;
      return false;
    }
    if (p[0] == '*') {
      std::string_view rest = p.substr(1);
      for (std::size_t i = 0; i <= s.size(); ++i) {
        if (match_from(rest, s.substr(i))) return true;
        if (i < s.size() && s[i] == '/') break;
      }
      return false;
    }
    if (s.empty()) return false;
    if (p[0] == '?') {
      if (s[0] == '/') return false;
    } else if (p[0] == '[') {
      std::size_t len = 0;
      int r = match_class(p, s[0], len);
      if (r < 0) {
        if (s[0] != '[') return false;  // unterminated: a literal '['
      } else {
        if (r == 0 || s[0] == '/') return false;
        p = p.substr(len);
        s = s.substr(1);
        continue;
      }
    } else if (p[0] != s[0]) {
      return false;
    }
    p = p.substr(1);
    s = s.substr(1);
  }
  return s.empty();
}
}  // namespace

bool glob_match(std::string_view pattern, std::string_view path) {
  return match_from(pattern, path);
}

bool path_filter::matches(const std::string& pattern, std::string_view path) {
  if (glob_match(pattern, path)) return true;
  if (pattern.find('/') == std::string::npos) {
    auto slash = path.rfind('/');
    if (slash != std::string_view::npos) return glob_match(pattern, path.substr(slash + 1));
  }
  return false;
}

result<path_filter> path_filter::make(std::vector<std::string> include,
                                      std::vector<std::string> exclude) {
  for (const auto* list : {&include, &exclude})
    for (const auto& p : *list) {
      if (p.empty()) return error(errc::invalid_argument, "empty glob pattern");
      if (p.size() > 1024)
        return error(errc::invalid_argument, "glob pattern longer than 1024 characters");
      for (std::size_t i = 0; i < p.size(); ++i)
        if (p[i] == '[') {
          std::size_t len = 0;
          if (match_class(std::string_view(p).substr(i), 'a', len) < 0)
            return error(errc::invalid_argument, "glob '" + p + "': unclosed '['");
          i += len - 1;
        }
    }
  if (include.size() + exclude.size() > 256)
    return error(errc::invalid_argument, "more than 256 glob patterns");
  path_filter f;
  f.include_ = std::move(include);
  f.exclude_ = std::move(exclude);
  return f;
}

bool path_filter::selects(std::string_view path) const {
  bool in = include_.empty();
  for (const auto& p : include_)
    if (matches(p, path)) {
      in = true;
      break;
    }
  if (!in) return false;
  for (const auto& p : exclude_)
    if (matches(p, path)) return false;
  return true;
}

}  // namespace shoal::model
