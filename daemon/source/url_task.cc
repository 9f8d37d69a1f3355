#include "daemon/source/url_task.h"

#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <cctype>

#include "common/sha256.h"

namespace shoal::source {
namespace {

constexpr std::size_t kMaxUrl = 8192;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool volatile_param(std::string_view key) {
  const std::string k = lower(key);
  if (k.starts_with("x-amz-") || k.starts_with("x-goog-")) return true;
  static constexpr std::array<std::string_view, 24> names = {
      "signature", "expires", "key-pair-id", "policy", "token", "access_token", "sig", "se",
      "st", "sp", "sv", "sr", "spr", "ss", "srt", "skoid", "sktid", "skt", "ske", "sks", "skv",
      "ns", "awsaccesskeyid", "googleaccessid"};
  return std::find(names.begin(), names.end(), k) != names.end();
}

}  // namespace

result<std::string> canonical_file_url(std::string_view text) {
  if (text.size() > kMaxUrl)
    return error(errc::invalid_argument, "URL is longer than 8 KiB");
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed)
    return error(errc::invalid_argument,
                 "\"" + std::string(text.substr(0, 200)) + "\" is not an absolute URL: " + parsed.error().message());
  boost::urls::url u(*parsed);
  const std::string scheme = lower(u.scheme());
  if (scheme != "http" && scheme != "https")
    return error(errc::invalid_argument, "only http and https URLs can be fetched, not " + scheme);
  if (u.host().empty()) return error(errc::invalid_argument, "URL without a host");
  if (u.has_userinfo())
    return error(errc::invalid_argument,
                 "URL with user:password@ (pass credentials with --header 'Authorization: ...')");
  u.set_scheme(scheme);
  u.set_encoded_host(lower(u.encoded_host()));
  if ((scheme == "http" && u.port() == "80") || (scheme == "https" && u.port() == "443"))
    u.remove_port();
  u.remove_fragment();
  boost::urls::url out = u;
  out.remove_query();
  for (auto p : u.params())
    if (!volatile_param(p.key)) out.params().append(p);
  std::string s = scheme + "://" + std::string(out.encoded_authority());
  s += out.encoded_path().empty() ? std::string("/") : std::string(out.encoded_path());
  if (!out.encoded_query().empty()) s += "?" + std::string(out.encoded_query());
  return s;
}

result<std::string> url_task_id(std::string_view url, std::string_view tag) {
  auto c = canonical_file_url(url);
  if (!c) return std::move(c).error();
  std::string key = *c;
  if (!tag.empty()) key += "#" + std::string(tag);
  return sha256_hex(key);
}

}  // namespace shoal::source
