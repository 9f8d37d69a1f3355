#pragma once
// The origin client (DESIGN §5, §8): talks to upstream OCI registries.
// - https unless the registry is listed as insecure (plain http; loopback and
//   private addresses allowed only then). Other loopback, private (RFC 1918,
//   fc00::/7) and link-local targets are refused: no SSRF through the mirror.
// - Bearer token flow: on a 401 with `WWW-Authenticate: Bearer realm=..,
//   service=.., scope=..` to a request sent with no credentials or with Basic
//   credentials, fetches a token from the realm (with those Basic credentials,
//   if any), caches it per (credentials, realm, service, scope) until it
//   expires, and retries once. A client's own Bearer token is passed through.
// - Redirects followed (at most 5); Authorization dropped when the host changes.
// - Retries with exponential backoff on 5xx, connection errors and resets;
//   a blob stream interrupted mid-body resumes with `Range`.
//
// Threading: one registry_client per executor; every coroutine runs on it.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace shoal::source {

struct options {
  // "host" or "host:port" entries reached over plain http (Docker's
  // insecure-registries). Loopback/private addresses are allowed only for these.
  std::vector<std::string> insecure_registries;
  int max_attempts = 4;                                 // per request, incl. the first
  std::chrono::milliseconds initial_backoff{200};       // doubles per retry
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds idle_timeout{60};                // no bytes for this long = failure
  int max_redirects = 5;
  std::string user_agent = "shoal/0.1";
};

// A response that is not a transport failure: any status, its headers of
// interest, and a small body (error JSON, manifest) if one was read.
struct response {
  unsigned status = 0;
  std::string content_type;
  std::string docker_content_digest;
  std::string www_authenticate;       // passed to the client on 401
  std::optional<std::uint64_t> content_length;
  std::string body;                   // for GET manifest and error bodies only
};

struct request_target {
  std::string registry;       // "host[:port]" as in a reference, e.g. "127.0.0.1:5000"
  std::string repository;     // "library/ubuntu"
  std::string authorization;  // the client's Authorization header, passed through ("" = none)
  // A plain HTTP(S) file instead of a registry blob (`shoalctl get`): blob
  // requests (head_blob, open_blob) go to this URL; registry and repository
  // then only name it in messages. Same SSRF policy (plain http and private
  // addresses only for hosts listed as insecure).
  std::string url{};
  // For URL tasks: the content's expected "sha256:<hex>" if the user gave
  // one; empty = the content is not verified as a whole (pieces still are,
  // against the source's digests, in a swarm).
  std::string content_digest{};
};

// A blob body being read from origin. read_some returns 0 at the end.
class blob_stream {
 public:
  virtual ~blob_stream() = default;
  // Reads up to out.size() bytes; on a broken connection it reconnects with
  // Range from the current offset (bounded attempts) before failing.
  virtual boost::asio::awaitable<result<std::size_t>> read_some(std::span<char> out) = 0;
  // Offset of the next byte read_some will return.
  virtual std::uint64_t offset() const = 0;
};

class registry_client {
 public:
  registry_client(boost::asio::any_io_executor ex, options opts);
  ~registry_client();

  // Checks the target is allowed and returns the scheme to use ("http"/"https"),
  // or errc::forbidden with a message naming the registry and the flag to set.
  result<std::string> scheme_for(const std::string& registry) const;

  // GET or HEAD /v2/<repo>/manifests/<reference>; `accept` is passed upstream.
  // A body larger than max_body is errc::too_large.
  boost::asio::awaitable<result<response>> manifest(request_target target, std::string reference,
                                                    std::string accept, bool head,
                                                    std::size_t max_body);
  // GET /v2/ with the client's credentials (repository ignored): any status as
  // a value, so a 401 challenge can be relayed to registry clients that probe /v2/.
  boost::asio::awaitable<result<response>> ping(request_target target);
  // HEAD /v2/<repo>/blobs/<digest>: size and authorization check.
  boost::asio::awaitable<result<response>> head_blob(request_target target, std::string digest);
  // GET /v2/<repo>/blobs/<digest> with `Range: bytes=offset-(end-1)` (whole
  // blob when offset == 0 and end == 0). Non-2xx statuses come back as an
  // error whose message names the registry, repository and status.
  boost::asio::awaitable<result<std::unique_ptr<blob_stream>>> open_blob(request_target target,
                                                                         std::string digest,
                                                                         std::uint64_t offset,
                                                                         std::uint64_t end);

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace shoal::source
