#include "daemon/source/registry_client.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <string>

#include "test/unit/source/fake_server.h"

// GCC 12 false positive on Asio awaitable frames (see daemon/source/registry_client.cc).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

using namespace shoal;
using namespace shoal::source;
using shoal::test::fake_server;
using shoal::test::reply;
using shoal::test::run;
using shoal::test::seen_request;
namespace asio = boost::asio;

namespace {

const std::string kDigest =
    "sha256:ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";
constexpr std::size_t kManifestLimit = std::size_t{4} * 1024 * 1024;

options fast_options(std::vector<std::string> insecure = {"127.0.0.1"}) {
  options o;
  o.insecure_registries = std::move(insecure);
  o.max_attempts = 3;
  o.initial_backoff = std::chrono::milliseconds(1);
  o.connect_timeout = std::chrono::seconds(5);
  o.idle_timeout = std::chrono::seconds(5);
  return o;
}

request_target target_on(const fake_server& s, std::string auth = {}) {
  return request_target{s.registry(), "models/x", std::move(auth)};
}

std::string make_blob(std::size_t n) {
  std::string b(n, '\0');
  std::uint32_t x = 12345;
  for (auto& c : b) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return b;
}

// Opens a blob and reads it to the end in small reads.
asio::awaitable<result<std::string>> read_blob(registry_client* client, request_target target,
                                               std::string digest, std::uint64_t offset,
                                               std::uint64_t end) {
  auto s = co_await client->open_blob(std::move(target), std::move(digest), offset, end);
  if (!s) co_return std::move(s).error();
  std::string out;
  char buf[4096];
  for (;;) {
    auto n = co_await (*s)->read_some(std::span<char>(buf, sizeof buf));
    if (!n) co_return std::move(n).error();
    if (*n == 0) break;
    out.append(buf, *n);
    if ((*s)->offset() != offset + out.size()) {
      co_return error(errc::corrupt, "offset() does not follow the bytes read");
    }
  }
  co_return out;
}

std::string bearer_challenge_for(const fake_server& token_server) {
  return "Bearer realm=\"http://127.0.0.1:" + std::to_string(token_server.port()) +
         "/token\",service=\"fake-registry\",scope=\"repository:models/x:pull\"";
}

}  // namespace

TEST_CASE("manifest GET returns body and headers") {
  asio::io_context ioc;
  fake_server reg(ioc, [](const seen_request&) {
    reply r;
    r.headers = {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"},
                 {"Docker-Content-Digest", "sha256:feed"}};
    r.body = R"({"schemaVersion":2})";
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  auto r = run(
      ioc, client.manifest(target_on(reg), "latest", "application/vnd.oci.image.manifest.v1+json",
                           false, kManifestLimit));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->content_type == "application/vnd.oci.image.manifest.v1+json");
  CHECK(r->docker_content_digest == "sha256:feed");
  CHECK(r->body == R"({"schemaVersion":2})");
  CHECK(r->content_length == std::optional<std::uint64_t>(19));
  REQUIRE(reg.requests().size() == 1);
  const auto& req = reg.requests()[0];
  CHECK(req.method == "GET");
  CHECK(req.target == "/v2/models/x/manifests/latest");
  CHECK(req.accept == "application/vnd.oci.image.manifest.v1+json");
  CHECK(req.host == reg.registry());
  CHECK(req.user_agent == "shoal/0.1");
  CHECK(req.authorization.empty());
}

TEST_CASE("manifest HEAD returns headers without a body") {
  asio::io_context ioc;
  fake_server reg(ioc, [](const seen_request&) {
    reply r;
    r.headers = {{"Content-Type", "application/vnd.oci.image.index.v1+json"},
                 {"Docker-Content-Digest", "sha256:beef"}};
    r.body = std::string(777, 'x');
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  auto r = run(ioc, client.manifest(target_on(reg), kDigest, "*/*", true, kManifestLimit));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->content_length == std::optional<std::uint64_t>(777));
  CHECK(r->docker_content_digest == "sha256:beef");
  CHECK(r->body.empty());
  CHECK(reg.requests().at(0).method == "HEAD");
  CHECK(reg.requests().at(0).target == "/v2/models/x/manifests/" + kDigest);
}

TEST_CASE("a manifest over the size limit is too_large") {
  asio::io_context ioc;
  bool no_length = false;
  fake_server reg(ioc, [&](const seen_request&) {
    reply r;
    r.body = std::string(5000, 'm');
    r.no_length = no_length;
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  SECTION("known from Content-Length") {}
  SECTION("found while reading a body without Content-Length") { no_length = true; }
  auto r = run(ioc, client.manifest(target_on(reg), "latest", "", false, 4096));
  REQUIRE_FALSE(r);
  CHECK(r.error().is(errc::too_large));
  CHECK(r.error().message ==
        "manifest latest from " + reg.registry() + "/models/x is larger than the 4 KiB limit");
}

TEST_CASE("head_blob returns the size and passes error statuses as values") {
  asio::io_context ioc;
  fake_server reg(ioc, [](const seen_request& s) {
    reply r;
    if (s.target.find("missing") != std::string::npos) {
      r.status = 404;
      r.body = R"({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]})";
      return r;
    }
    r.headers = {{"Content-Length", "123456789"}, {"Docker-Content-Digest", kDigest}};
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  auto r = run(ioc, client.head_blob(target_on(reg), kDigest));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->content_length == std::optional<std::uint64_t>(123456789));
  CHECK(r->docker_content_digest == kDigest);
  CHECK(reg.requests().at(0).method == "HEAD");
  CHECK(reg.requests().at(0).target == "/v2/models/x/blobs/" + kDigest);

  auto missing = run(ioc, client.head_blob(target_on(reg), "sha256:missing"));
  REQUIRE(missing);
  CHECK(missing->status == 404);
}

TEST_CASE("requests to loopback are refused unless the registry is insecure") {
  asio::io_context ioc;
  fake_server reg(ioc, [](const seen_request&) { return reply{}; });
  registry_client client(ioc.get_executor(), fast_options({}));

  SECTION("a literal loopback address") {
    auto r = run(ioc, client.head_blob(target_on(reg), kDigest));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::forbidden));
    CHECK_THAT(r.error().message, Catch::Contains("--insecure-registry " + reg.registry()));
  }
  SECTION("a name that resolves to loopback") {
    request_target t{"localhost:" + std::to_string(reg.port()), "models/x", ""};
    auto r = run(ioc, client.manifest(t, "latest", "", false, kManifestLimit));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::forbidden));
    CHECK_THAT(r.error().message, Catch::Contains("resolves to loopback address"));
    CHECK_THAT(r.error().message,
               Catch::Contains("--insecure-registry localhost:" + std::to_string(reg.port())));
  }
  SECTION("a blob") {
    auto r = run(ioc, client.open_blob(target_on(reg), kDigest, 0, 0));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::forbidden));
  }
  CHECK(reg.requests().empty());
}

TEST_CASE("a client's Bearer token is passed through and its 401 returned") {
  asio::io_context ioc;
  fake_server tokens(ioc, [](const seen_request&) {
    reply r;
    r.body = R"({"token":"should-not-be-used"})";
    return r;
  });
  const std::string challenge = bearer_challenge_for(tokens);
  fake_server reg(ioc, [&](const seen_request&) {
    reply r;
    r.status = 401;
    r.headers = {{"WWW-Authenticate", challenge}};
    r.body = R"({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]})";
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  auto r = run(ioc, client.manifest(target_on(reg, "Bearer client-token"), "latest", "", false,
                                    kManifestLimit));
  REQUIRE(r);
  CHECK(r->status == 401);
  CHECK(r->www_authenticate == challenge);
  CHECK_THAT(r->body, Catch::Contains("UNAUTHORIZED"));
  REQUIRE(reg.requests().size() == 1);
  CHECK(reg.requests()[0].authorization == "Bearer client-token");
  CHECK(tokens.requests().empty());
}

TEST_CASE("Bearer token flow, anonymous and with Basic credentials; tokens are cached") {
  asio::io_context ioc;
  fake_server tokens(ioc, [](const seen_request& s) {
    reply r;
    if (s.authorization == "Basic dXNlcjpwYXNz") {
      r.body = R"({"access_token":"tok-user","expires_in":300})";
    } else if (s.authorization.empty()) {
      r.body = R"({"token":"tok-anon"})";
    } else {
      r.status = 401;
    }
    return r;
  });
  const std::string challenge = bearer_challenge_for(tokens);
  fake_server reg(ioc, [&](const seen_request& s) {
    reply r;
    if (s.authorization != "Bearer tok-anon" && s.authorization != "Bearer tok-user") {
      r.status = 401;
      r.headers = {{"WWW-Authenticate", challenge}};
      return r;
    }
    r.headers = {{"Docker-Content-Digest", "sha256:m"}};
    r.body = "{}";
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());

  SECTION("anonymous") {
    auto r = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "{}");
    REQUIRE(tokens.requests().size() == 1);
    const auto& tr = tokens.requests()[0];
    CHECK(tr.authorization.empty());
    CHECK_THAT(tr.target, Catch::StartsWith("/token?"));
    CHECK_THAT(tr.target, Catch::Contains("service=fake-registry"));
    CHECK_THAT(tr.target, Catch::Contains("scope=repository:models/x:pull"));
    REQUIRE(reg.requests().size() == 2);
    CHECK(reg.requests()[0].authorization.empty());
    CHECK(reg.requests()[1].authorization == "Bearer tok-anon");

    // Cached: the next request carries the token at once, no token fetch.
    auto h = run(ioc, client.head_blob(target_on(reg), kDigest));
    REQUIRE(h);
    CHECK(h->status == 200);
    CHECK(tokens.requests().size() == 1);
    REQUIRE(reg.requests().size() == 3);
    CHECK(reg.requests()[2].authorization == "Bearer tok-anon");
  }

  SECTION("with Basic credentials") {
    auto r = run(ioc, client.manifest(target_on(reg, "Basic dXNlcjpwYXNz"), "latest", "", false,
                                      kManifestLimit));
    REQUIRE(r);
    CHECK(r->status == 200);
    REQUIRE(tokens.requests().size() == 1);
    CHECK(tokens.requests()[0].authorization == "Basic dXNlcjpwYXNz");
    REQUIRE(reg.requests().size() == 2);
    CHECK(reg.requests()[1].authorization == "Bearer tok-user");

    // Another client without credentials does not get this client's token.
    auto anon = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
    REQUIRE(anon);
    CHECK(tokens.requests().size() == 2);
    CHECK(reg.requests().back().authorization == "Bearer tok-anon");

    // The first client's token is still cached.
    auto again = run(ioc, client.manifest(target_on(reg, "Basic dXNlcjpwYXNz"), "latest", "", false,
                                          kManifestLimit));
    REQUIRE(again);
    CHECK(tokens.requests().size() == 2);
    CHECK(reg.requests().back().authorization == "Bearer tok-user");
  }

  SECTION("a failed token fetch returns the registry's 401 for the client") {
    auto r = run(ioc, client.manifest(target_on(reg, "Basic d3Jvbmc6d3Jvbmc="), "latest", "", false,
                                      kManifestLimit));
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(r->www_authenticate == challenge);
    CHECK(tokens.requests().size() == 1);
    CHECK(reg.requests().size() == 1);
  }

  SECTION("a blob open with a failed token fetch is unauthorized") {
    auto r = run(ioc, client.open_blob(target_on(reg, "Basic d3Jvbmc6d3Jvbmc="), kDigest, 0, 0));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::unauthorized));
    CHECK(r.error().message == "blob sha256:ab12cd34ef56… from " + reg.registry() +
                                   "/models/x: 401 Unauthorized (check credentials for models/x)");
  }
}

TEST_CASE("a token the registry refuses is dropped and the challenge passed on") {
  asio::io_context ioc;
  fake_server tokens(ioc, [](const seen_request&) {
    reply r;
    r.body = R"({"token":"tok-useless"})";
    return r;
  });
  const std::string challenge = bearer_challenge_for(tokens);
  fake_server reg(ioc, [&](const seen_request&) {
    reply r;
    r.status = 401;
    r.headers = {{"WWW-Authenticate", challenge}};
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  auto r = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
  REQUIRE(r);
  CHECK(r->status == 401);
  CHECK(r->www_authenticate == challenge);
  REQUIRE(reg.requests().size() == 2);  // the original and one retry with the token
  CHECK(reg.requests()[1].authorization == "Bearer tok-useless");
  // Not cached: the next request asks for a token again (once: a fresh token
  // that is refused is not fetched a second time).
  auto again = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
  REQUIRE(again);
  CHECK(again->status == 401);
  CHECK(tokens.requests().size() == 2);
  CHECK(reg.requests().size() == 3);
}

TEST_CASE("redirects: credentials kept on the same host, dropped on another") {
  asio::io_context ioc;
  const std::string blob = make_blob(20000);
  fake_server storage(
      ioc, [&](const seen_request& s) { return shoal::test::serve_range(blob, s.range); });
  fake_server reg(ioc, [&](const seen_request& s) {
    reply r;
    if (s.target.find("/blobs/") != std::string::npos) {
      r.status = 307;
      r.headers = {{"Location",
                    "http://127.0.0.1:" + std::to_string(storage.port()) + "/bucket/blob?sig=abc"}};
    } else if (s.target.find("/manifests/old") != std::string::npos) {
      r.status = 301;
      r.headers = {{"Location", "/v2/models/x/manifests/new"}};
    } else {
      r.body = "manifest";
    }
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());

  SECTION("another host (another port) gets no Authorization") {
    auto data = run(ioc, read_blob(&client, target_on(reg, "Bearer secret"), kDigest, 0, 0));
    REQUIRE(data);
    CHECK(*data == blob);
    REQUIRE(reg.requests().size() == 1);
    CHECK(reg.requests()[0].authorization == "Bearer secret");
    REQUIRE(storage.requests().size() == 1);
    CHECK(storage.requests()[0].target == "/bucket/blob?sig=abc");
    CHECK(storage.requests()[0].authorization.empty());
    CHECK(storage.requests()[0].host == storage.registry());
  }
  SECTION("the same host keeps Authorization") {
    auto r = run(
        ioc, client.manifest(target_on(reg, "Bearer secret"), "old", "", false, kManifestLimit));
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "manifest");
    REQUIRE(reg.requests().size() == 2);
    CHECK(reg.requests()[1].target == "/v2/models/x/manifests/new");
    CHECK(reg.requests()[1].authorization == "Bearer secret");
  }
  SECTION("a Range request keeps its Range across the redirect") {
    auto data = run(ioc, read_blob(&client, target_on(reg), kDigest, 100, 5100));
    REQUIRE(data);
    CHECK(*data == blob.substr(100, 5000));
    CHECK(storage.requests().at(0).range == "bytes=100-5099");
  }
}

TEST_CASE("redirects to targets that are not allowed are refused") {
  asio::io_context ioc;
  std::string location;
  fake_server reg(ioc, [&](const seen_request&) {
    reply r;
    r.status = 302;
    r.headers = {{"Location", location}};
    return r;
  });
  // Only this registry's port is insecure, so other loopback ports are not.
  registry_client client(ioc.get_executor(), fast_options({reg.registry()}));
  SECTION("plain http to a host that is not insecure") {
    location = "http://10.0.0.7/blob";
    auto r = run(ioc, client.head_blob(target_on(reg), kDigest));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::forbidden));
    CHECK_THAT(r.error().message, Catch::Contains("--insecure-registry 10.0.0.7"));
  }
  SECTION("https to a name that resolves to loopback") {
    location = "https://localhost:1/blob";
    auto r = run(ioc, client.head_blob(target_on(reg), kDigest));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::forbidden));
    CHECK_THAT(r.error().message, Catch::Contains("localhost:1 resolves to loopback address"));
  }
  SECTION("too many redirects") {
    location = "/again";
    auto r = run(ioc, client.head_blob(target_on(reg), kDigest));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::upstream_error));
    CHECK_THAT(r.error().message, Catch::Contains("more than 5 redirects"));
    CHECK(reg.requests().size() == 6);
  }
}

TEST_CASE("5xx and dropped connections are retried with backoff; 4xx are not") {
  asio::io_context ioc;
  int failures_left = 2;
  unsigned fail_status = 503;
  fake_server reg(ioc, [&](const seen_request&) {
    reply r;
    if (failures_left > 0) {
      --failures_left;
      if (fail_status == 0) {
        r.body = "partial";
        r.cut_after = 0;  // headers only, then the connection drops
      } else {
        r.status = fail_status;
      }
      return r;
    }
    r.body = "ok";
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());

  SECTION("503 twice, then success") {
    auto r = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "ok");
    CHECK(reg.requests().size() == 3);
  }
  SECTION("connection dropped twice, then success") {
    fail_status = 0;
    auto r = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
    REQUIRE(r);
    CHECK(r->body == "ok");
    CHECK(reg.requests().size() == 3);
  }
  SECTION("500 on every attempt comes back as the last response") {
    failures_left = 100;
    fail_status = 500;
    auto r = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
    REQUIRE(r);
    CHECK(r->status == 500);
    CHECK(reg.requests().size() == 3);
    auto b = run(ioc, client.open_blob(target_on(reg), kDigest, 0, 0));
    REQUIRE_FALSE(b);
    CHECK(b.error().is(errc::upstream_error));
    CHECK_THAT(b.error().message, Catch::Contains("500 Internal Server Error after 3 attempts"));
  }
  SECTION("403 is not retried") {
    fail_status = 403;
    auto r = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
    REQUIRE(r);
    CHECK(r->status == 403);
    CHECK(reg.requests().size() == 1);
  }
}

TEST_CASE("connection failures give up after max_attempts with a clear error") {
  asio::io_context ioc;
  unsigned short port = 0;
  {
    // A port that was just free: nothing listens there now.
    asio::ip::tcp::acceptor a(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  registry_client client(ioc.get_executor(), fast_options());
  request_target t{"127.0.0.1:" + std::to_string(port), "models/x", ""};
  auto r = run(ioc, client.manifest(t, "latest", "", false, kManifestLimit));
  REQUIRE_FALSE(r);
  CHECK(r.error().is(errc::network));
  CHECK_THAT(r.error().message, Catch::StartsWith("manifest latest from 127.0.0.1:"));
  CHECK_THAT(r.error().message, Catch::Contains("cannot connect to 127.0.0.1:"));
  CHECK_THAT(r.error().message, Catch::Contains("gave up after 3 attempts"));
}

TEST_CASE("a blob stream resumes with Range after the connection is cut") {
  asio::io_context ioc;
  const std::string blob = make_blob(100000);
  int cuts_left = 1;
  std::size_t cut_size = 30000;
  bool chunked = false;
  fake_server reg(ioc, [&](const seen_request& s) {
    reply r = shoal::test::serve_range(blob, s.range);
    r.chunked = chunked && s.range.empty();
    if (cuts_left > 0) {
      --cuts_left;
      r.cut_after = cut_size;
    }
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());

  SECTION("whole blob with Content-Length") {
    auto data = run(ioc, read_blob(&client, target_on(reg), kDigest, 0, 0));
    REQUIRE(data);
    CHECK(data->size() == blob.size());
    CHECK(*data == blob);
    REQUIRE(reg.requests().size() == 2);
    CHECK(reg.requests()[0].range.empty());
    CHECK(reg.requests()[1].range == "bytes=30000-99999");
  }
  SECTION("chunked body of unknown length") {
    chunked = true;
    auto data = run(ioc, read_blob(&client, target_on(reg), kDigest, 0, 0));
    REQUIRE(data);
    CHECK(*data == blob);
    REQUIRE(reg.requests().size() == 2);
    // 30000 wire bytes of 1000-byte chunks carry a little under 30000 body bytes.
    const std::string resumed = reg.requests()[1].range;
    CHECK_THAT(resumed, Catch::StartsWith("bytes=29"));
    CHECK_THAT(resumed, Catch::EndsWith("-"));
  }
  SECTION("a range, cut twice") {
    cuts_left = 2;
    cut_size = 15000;
    auto data = run(ioc, read_blob(&client, target_on(reg), kDigest, 50000, 100000));
    REQUIRE(data);
    CHECK(*data == blob.substr(50000));
    REQUIRE(reg.requests().size() == 3);
    CHECK(reg.requests()[0].range == "bytes=50000-99999");
    CHECK(reg.requests()[1].range == "bytes=65000-99999");
    CHECK(reg.requests()[2].range == "bytes=80000-99999");
  }
}

TEST_CASE("a blob whose server stops responding fails after max_attempts") {
  asio::io_context ioc;
  const std::string blob = make_blob(10000);
  int requests = 0;
  fake_server reg(ioc, [&](const seen_request& s) {
    reply r = shoal::test::serve_range(blob, s.range);
    // The first response delivers 1000 bytes; every resume drops at once.
    r.cut_after = ++requests == 1 ? 1000 : 0;
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  auto data = run(ioc, read_blob(&client, target_on(reg), kDigest, 0, 0));
  REQUIRE_FALSE(data);
  CHECK(data.error().is(errc::network));
  CHECK_THAT(data.error().message, Catch::Contains("connection lost at byte 1000"));
  // max_attempts connections in all without progress: the one that broke at
  // byte 1000 and two resumes that each break right after the header.
  CHECK(reg.requests().size() == 3);
  CHECK(reg.requests()[1].range == "bytes=1000-9999");
  CHECK(reg.requests()[2].range == "bytes=1000-9999");
}

TEST_CASE("blob status errors name the blob, the registry and what to do") {
  asio::io_context ioc;
  unsigned status = 404;
  bool ignore_range = false;
  fake_server reg(ioc, [&](const seen_request& s) {
    reply r;
    if (ignore_range) {
      r.body = "whole blob";
      return r;
    }
    r.status = status;
    if (status == 404) {
      r.body = R"({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]})";
    }
    (void)s;
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  SECTION("404") {
    auto r = run(ioc, client.open_blob(target_on(reg), kDigest, 0, 0));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::not_found));
    CHECK(
        r.error().message ==
        "blob sha256:ab12cd34ef56… from " + reg.registry() +
            "/models/x: 404 Not Found (registry says: blob unknown to registry) (check the digest "
            "and that the blob is in models/x)");
    CHECK(reg.requests().size() == 1);
  }
  SECTION("416") {
    status = 416;
    auto r = run(ioc, client.open_blob(target_on(reg), kDigest, 5000, 0));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::range_not_satisfiable));
    CHECK_THAT(r.error().message, Catch::Contains("bytes=5000-"));
  }
  SECTION("200 to a Range request from a non-zero offset") {
    ignore_range = true;
    auto r = run(ioc, client.open_blob(target_on(reg), kDigest, 5, 0));
    REQUIRE_FALSE(r);
    CHECK(r.error().is(errc::upstream_error));
    CHECK_THAT(r.error().message, Catch::Contains("does not support ranges"));
  }
  SECTION("200 to a Range request from offset 0 is cut to the range") {
    ignore_range = true;
    auto data = run(ioc, read_blob(&client, target_on(reg), kDigest, 0, 5));
    REQUIRE(data);
    CHECK(*data == "whole");
  }
}

TEST_CASE("keep-alive connections are reused, and a stale one is replaced") {
  asio::io_context ioc;
  bool close_after = false;
  fake_server reg(ioc, [&](const seen_request&) {
    reply r;
    r.body = "m";
    r.close_after = close_after;
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  SECTION("reused") {
    for (int i = 0; i < 3; ++i) {
      auto r = run(ioc, client.manifest(target_on(reg), "latest", "", i % 2 == 0, kManifestLimit));
      REQUIRE(r);
      CHECK(r->status == 200);
    }
    CHECK(reg.requests().size() == 3);
    CHECK(reg.connections() == 1);
  }
  SECTION("the server closed the idle connection") {
    close_after = true;
    for (int i = 0; i < 3; ++i) {
      auto r = run(ioc, client.manifest(target_on(reg), "latest", "", false, kManifestLimit));
      REQUIRE(r);
      CHECK(r->body == "m");
    }
    CHECK(reg.requests().size() == 3);
    CHECK(reg.connections() == 3);
  }
}

TEST_CASE("bad input is refused before any request") {
  asio::io_context ioc;
  fake_server reg(ioc, [](const seen_request&) { return reply{}; });
  registry_client client(ioc.get_executor(), fast_options());
  auto bad_repo = run(ioc, client.head_blob({reg.registry(), "../etc", ""}, kDigest));
  REQUIRE_FALSE(bad_repo);
  CHECK(bad_repo.error().is(errc::invalid_argument));
  auto bad_ref = run(ioc, client.manifest(target_on(reg), "a b\r\nX: y", "", false, 1024));
  REQUIRE_FALSE(bad_ref);
  CHECK(bad_ref.error().is(errc::invalid_argument));
  auto bad_auth = run(ioc, client.head_blob(target_on(reg, "Bearer x\r\nX-Evil: 1"), kDigest));
  REQUIRE_FALSE(bad_auth);
  CHECK(bad_auth.error().is(errc::invalid_argument));
  auto bad_digest = run(ioc, client.open_blob(target_on(reg), "nodigest", 0, 0));
  REQUIRE_FALSE(bad_digest);
  CHECK(bad_digest.error().is(errc::invalid_argument));
  auto bad_range = run(ioc, client.open_blob(target_on(reg), kDigest, 10, 10));
  REQUIRE_FALSE(bad_range);
  CHECK(bad_range.error().is(errc::invalid_argument));
  CHECK(reg.requests().empty());
}

TEST_CASE("a blob served in shorter ranges than asked is read to the end") {
  asio::io_context ioc;
  const std::string blob = make_blob(20000);
  fake_server reg(ioc, [&](const seen_request& s) {
    reply r = shoal::test::serve_range(blob, s.range);
    if (r.status == 206) {
      // At most 7000 bytes per answer, with a truthful Content-Range.
      const auto first = std::stoull(s.range.substr(6, s.range.find('-') - 6));
      r.body = r.body.substr(0, 7000);
      r.headers = {{"Content-Range", "bytes " + std::to_string(first) + "-" +
                                         std::to_string(first + r.body.size() - 1) + "/" +
                                         std::to_string(blob.size())}};
    }
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());
  auto data = run(ioc, read_blob(&client, target_on(reg), kDigest, 1000, 0));
  REQUIRE(data);
  CHECK(*data == blob.substr(1000));
  REQUIRE(reg.requests().size() == 3);
  CHECK(reg.requests()[0].range == "bytes=1000-");
  CHECK(reg.requests()[1].range == "bytes=8000-19999");
  CHECK(reg.requests()[2].range == "bytes=15000-19999");
  CHECK(reg.connections() == 1);  // complete responses leave the connection reusable
}

TEST_CASE("a range past the blob's end stops at the end") {
  asio::io_context ioc;
  const std::string blob = make_blob(20000);
  fake_server reg(ioc,
                  [&](const seen_request& s) { return shoal::test::serve_range(blob, s.range); });
  registry_client client(ioc.get_executor(), fast_options());
  auto data = run(ioc, read_blob(&client, target_on(reg), kDigest, 1000, 50000));
  REQUIRE(data);
  CHECK(*data == blob.substr(1000));
  CHECK(reg.requests().size() == 1);
  CHECK(reg.requests()[0].range == "bytes=1000-49999");
}

TEST_CASE("ping relays the registry's /v2/ answer without a token flow") {
  asio::io_context ioc;
  fake_server tokens(ioc, [](const seen_request&) {
    reply r;
    r.body = R"({"token":"unused"})";
    return r;
  });
  const std::string challenge = "Bearer realm=\"http://127.0.0.1:" + std::to_string(tokens.port()) +
                                "/token\",service=\"fake\"";
  fake_server reg(ioc, [&](const seen_request& s) {
    reply r;
    if (s.authorization == "Bearer good") {
      r.body = "{}";
      return r;
    }
    r.status = 401;
    r.headers = {{"WWW-Authenticate", challenge},
                 {"Docker-Distribution-API-Version", "registry/2.0"}};
    r.body = R"({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]})";
    return r;
  });
  registry_client client(ioc.get_executor(), fast_options());

  auto anon = run(ioc, client.ping({reg.registry(), "", ""}));
  REQUIRE(anon);
  CHECK(anon->status == 401);
  CHECK(anon->www_authenticate == challenge);
  CHECK_THAT(anon->body, Catch::Contains("authentication required"));

  auto basic = run(ioc, client.ping({reg.registry(), "", "Basic dXNlcjpwYXNz"}));
  REQUIRE(basic);
  CHECK(basic->status == 401);

  auto bearer = run(ioc, client.ping({reg.registry(), "", "Bearer good"}));
  REQUIRE(bearer);
  CHECK(bearer->status == 200);

  REQUIRE(reg.requests().size() == 3);
  CHECK(reg.requests()[0].target == "/v2/");
  CHECK(reg.requests()[0].authorization.empty());
  CHECK(reg.requests()[1].authorization == "Basic dXNlcjpwYXNz");
  CHECK(reg.requests()[2].authorization == "Bearer good");
  CHECK(tokens.requests().empty());

  registry_client strict(ioc.get_executor(), fast_options({}));
  auto refused = run(ioc, strict.ping({reg.registry(), "", ""}));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().is(errc::forbidden));
}
