#pragma once
// The dashboard's built front end (scheduler/dashboard/web, bundled by esbuild),
// embedded into the binary at build time by embed.cmake: the scheduler serves
// the page with no files next to it.

#include <span>
#include <string_view>

namespace shoal::scheduler::dashboard {

struct asset {
  std::string_view path;          // "/index.html", "/assets/app.js", ...
  std::string_view content_type;  // with charset for text
  std::string_view etag;          // quoted SHA-256 prefix of the body
  std::string_view body;
};

// Every embedded file.
std::span<const asset> assets();
// The file at `path`, or nullptr.
const asset* find_asset(std::string_view path);

}  // namespace shoal::scheduler::dashboard
