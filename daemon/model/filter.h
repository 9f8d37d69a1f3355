#pragma once
// --include / --exclude globs over a model's file paths.
//
// Glob syntax: `*` any run of characters except '/', `?` one character except
// '/', `[abc]` / `[a-z]` / `[!a]` a class, `**` any run including '/' (so
// `**/*.json` and `weights/**` work). A pattern without '/' is matched against
// the file's base name as well as the whole path (`*.safetensors` selects
// every safetensors file at any depth).
//
// A path is selected when it matches some include (or no include is given)
// and no exclude. Pure functions; used on the I/O thread.

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shoal::model {

// Whether `path` matches `pattern` (syntax above; not the base-name rule).
bool glob_match(std::string_view pattern, std::string_view path);

class path_filter {
 public:
  path_filter() = default;
  // Errors name a malformed pattern (empty, unclosed '[').
  static result<path_filter> make(std::vector<std::string> include,
                                  std::vector<std::string> exclude);
  bool selects(std::string_view path) const;
  bool empty() const { return include_.empty() && exclude_.empty(); }
  const std::vector<std::string>& include() const { return include_; }
  const std::vector<std::string>& exclude() const { return exclude_; }

 private:
  static bool matches(const std::string& pattern, std::string_view path);
  std::vector<std::string> include_;
  std::vector<std::string> exclude_;
};

}  // namespace shoal::model
