#pragma once
// Registry credentials given to shoalctl commands (push, preheat).

#include <string>

namespace shoal::ctl {

// "Basic <base64(user:password)>", the Authorization header value.
std::string basic_authorization(const std::string& user, const std::string& password);

}  // namespace shoal::ctl
