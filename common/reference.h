#pragma once
// OCI names and references (distribution spec grammar).

#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace shoal {

// Repository name: path components of [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
// separated by '/', at most 255 characters.
bool valid_repository(std::string_view name);
// Tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
bool valid_tag(std::string_view tag);

struct reference {
  std::string registry;    // "registry-1.docker.io", "127.0.0.1:5000"
  std::string repository;  // "library/ubuntu"
  std::string tag;         // may be empty when a digest is given
  std::string digest;      // "sha256:..." or empty
  // tag if set, else digest ("latest" when neither was given).
  std::string ref() const { return digest.empty() ? (tag.empty() ? "latest" : tag) : digest; }
  std::string str() const;
};

// "host[:port]/repo[:tag][@sha256:...]"; names without a registry part get
// docker.io and "library/" as Docker does. docker.io maps to registry-1.docker.io.
result<reference> parse_reference(std::string_view text);
// containerd's ns= value or a registry host -> the host to connect to
// ("docker.io" -> "registry-1.docker.io").
std::string canonical_registry_host(std::string_view host);

}  // namespace shoal
