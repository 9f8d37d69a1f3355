#include "daemon/source/upstream_policy.h"

#include <boost/asio/ip/address.hpp>
#include <catch2/catch.hpp>

#include "daemon/source/bearer.h"

using namespace shoal;
using namespace shoal::source;

namespace {
address_class cls(const char* a) { return classify(boost::asio::ip::make_address(a)); }
}  // namespace

TEST_CASE("addresses are classified for the SSRF guard") {
  CHECK(cls("127.0.0.1") == address_class::loopback);
  CHECK(cls("127.255.0.9") == address_class::loopback);
  CHECK(cls("::1") == address_class::loopback);
  CHECK(cls("10.1.2.3") == address_class::private_use);
  CHECK(cls("172.16.0.1") == address_class::private_use);
  CHECK(cls("172.31.255.255") == address_class::private_use);
  CHECK(cls("192.168.1.1") == address_class::private_use);
  CHECK(cls("fc00::1") == address_class::private_use);
  CHECK(cls("fd12:3456::1") == address_class::private_use);
  CHECK(cls("169.254.169.254") == address_class::link_local);
  CHECK(cls("fe80::1") == address_class::link_local);
  CHECK(cls("0.0.0.0") == address_class::unspecified);
  CHECK(cls("::") == address_class::unspecified);
  CHECK(cls("224.0.0.1") == address_class::multicast);
  CHECK(cls("ff02::1") == address_class::multicast);
  CHECK(cls("255.255.255.255") == address_class::broadcast);
  // IPv4-mapped IPv6 is judged by its IPv4 address.
  CHECK(cls("::ffff:127.0.0.1") == address_class::loopback);
  CHECK(cls("::ffff:10.0.0.1") == address_class::private_use);
  // Public addresses, including ones next to the private ranges.
  CHECK(cls("8.8.8.8") == address_class::global);
  CHECK(cls("172.32.0.1") == address_class::global);
  CHECK(cls("172.15.255.255") == address_class::global);
  CHECK(cls("192.169.0.1") == address_class::global);
  CHECK(cls("2001:4860:4860::8888") == address_class::global);
  CHECK(cls("::ffff:8.8.8.8") == address_class::global);
}

TEST_CASE("scheme_for: https by default, http for insecure registries") {
  upstream_policy p({"myreg:5000", "127.0.0.1", "[::1]:5000", "Build.Local"});
  CHECK(*p.scheme_for("registry.example.com") == "https");
  CHECK(*p.scheme_for("registry.example.com:8443") == "https");
  CHECK(*p.scheme_for("myreg:5000") == "http");
  CHECK(*p.scheme_for("myreg:5001") == "https");  // host:port entries match that port only
  CHECK(*p.scheme_for("myreg") == "https");
  CHECK(*p.scheme_for("127.0.0.1") == "http");  // host entries match any port
  CHECK(*p.scheme_for("127.0.0.1:5000") == "http");
  CHECK(*p.scheme_for("[::1]:5000") == "http");
  CHECK(*p.scheme_for("build.local:1234") == "http");  // host names are case-insensitive
}

TEST_CASE("scheme_for refuses literal private addresses that are not listed") {
  upstream_policy p({});
  for (const char* r : {"127.0.0.1:5000", "10.0.0.1", "192.168.0.10:443", "169.254.169.254",
                        "[::1]:5000", "[fe80::1]", "172.20.1.1:5000"}) {
    INFO(r);
    auto s = p.scheme_for(r);
    REQUIRE_FALSE(s);
    CHECK(s.error().is(errc::forbidden));
    CHECK_THAT(s.error().message, Catch::Contains("--insecure-registry " + std::string(r)));
  }
  auto s = p.scheme_for("127.0.0.1:5000");
  CHECK_THAT(s.error().message, Catch::Contains("loopback"));
}

TEST_CASE("scheme_for rejects malformed registry names") {
  upstream_policy p({});
  for (const char* r :
       {"", "bad host", "host:", "host:0", "host:99999", "[::1", "[nope]:80", "host/path", "a@b"}) {
    INFO(r);
    auto s = p.scheme_for(r);
    REQUIRE_FALSE(s);
    CHECK(s.error().is(errc::invalid_argument));
  }
  CHECK_THROWS(upstream_policy({"bad host"}));
}

TEST_CASE("resolved addresses are checked unless the host is insecure") {
  upstream_policy p({"127.0.0.1:5000"});
  auto url = parse_url("https://registry.example.com/v2/");
  REQUIRE(url);
  auto r = p.check_address(*url, boost::asio::ip::make_address("10.1.1.1"));
  REQUIRE_FALSE(r);
  CHECK(r.error().is(errc::forbidden));
  CHECK(r.error().message ==
        "upstream registry.example.com resolves to private address 10.1.1.1; list it with "
        "--insecure-registry registry.example.com if it is trusted");
  CHECK(p.check_address(*url, boost::asio::ip::make_address("93.184.216.34")));

  auto listed = parse_url("http://127.0.0.1:5000/x");
  REQUIRE(listed);
  CHECK(p.check_address(*listed, boost::asio::ip::make_address("127.0.0.1")));
  auto other_port = parse_url("http://127.0.0.1:5001/x");
  CHECK_FALSE(p.check_address(*other_port, boost::asio::ip::make_address("127.0.0.1")));
}

TEST_CASE("plain http is allowed only to insecure hosts") {
  upstream_policy p({"mirror.local"});
  CHECK(p.check_url(*parse_url("https://auth.example.com/token"), "token realm"));
  CHECK(p.check_url(*parse_url("http://mirror.local:8080/token"), "token realm"));
  auto r = p.check_url(*parse_url("http://auth.example.com/token"), "token realm");
  REQUIRE_FALSE(r);
  CHECK(r.error().is(errc::forbidden));
  CHECK_THAT(r.error().message, Catch::Contains("--insecure-registry auth.example.com"));
  CHECK_FALSE(parse_url("ftp://example.com/x"));
}

TEST_CASE("Location headers resolve against the current URL") {
  auto base = *parse_url("https://reg.example.com/v2/a/blobs/sha256:1");
  auto rel = resolve_location(base, "/storage/x?sig=1#frag");
  REQUIRE(rel);
  CHECK(rel->str() == "https://reg.example.com/storage/x?sig=1");
  CHECK(rel->same_origin(base));
  auto abs = resolve_location(base, "https://s3.example.com:9000/bucket/obj?X-Amz=1");
  REQUIRE(abs);
  CHECK(abs->host == "s3.example.com");
  CHECK(abs->port == "9000");
  CHECK(abs->target == "/bucket/obj?X-Amz=1");
  CHECK_FALSE(abs->same_origin(base));
  auto v6 = resolve_location(base, "http://[::1]:5000/x");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->authority() == "[::1]:5000");
  auto scheme_change = resolve_location(base, "http://reg.example.com/x");
  REQUIRE(scheme_change);
  CHECK_FALSE(scheme_change->same_origin(base));
}

TEST_CASE("Bearer challenges are parsed from WWW-Authenticate") {
  auto c = parse_bearer_challenge(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull")");
  REQUIRE(c);
  CHECK(c->realm == "https://auth.docker.io/token");
  CHECK(c->service == "registry.docker.io");
  CHECK(c->scope == "repository:library/ubuntu:pull");

  auto multi = parse_bearer_challenge(
      R"(Basic realm="x", bearer Realm="https://a/t", error="invalid_token", scope="repository:a:pull repository:b:pull")");
  REQUIRE(multi);
  CHECK(multi->realm == "https://a/t");
  CHECK(multi->service.empty());
  CHECK(multi->scope == "repository:a:pull repository:b:pull");

  auto escaped = parse_bearer_challenge(R"(Bearer realm="https://a/t?x=\"y\"",service=plain)");
  REQUIRE(escaped);
  CHECK(escaped->realm == R"(https://a/t?x="y")");
  CHECK(escaped->service == "plain");

  CHECK_FALSE(parse_bearer_challenge(R"(Basic realm="registry")"));
  CHECK_FALSE(parse_bearer_challenge(R"(Bearer service="x")"));
  CHECK_FALSE(parse_bearer_challenge(""));
}

TEST_CASE("token replies") {
  auto a = parse_token_reply(R"({"token":"abc","expires_in":300})");
  REQUIRE(a);
  CHECK(a->token == "abc");
  CHECK(a->expires_in == std::chrono::seconds(300));
  auto b = parse_token_reply(R"({"access_token":"xyz"})");
  REQUIRE(b);
  CHECK(b->token == "xyz");
  CHECK(b->expires_in == std::chrono::seconds(60));
  CHECK_FALSE(parse_token_reply(R"({"expires_in":3})"));
  CHECK_FALSE(parse_token_reply("not json"));
  CHECK_FALSE(parse_token_reply(R"({"token":"a\r\nX-Evil: 1"})"));
  CHECK(has_auth_scheme("Basic dXNlcjpwYXNz", "Basic"));
  CHECK(has_auth_scheme("bearer abc", "Bearer"));
  CHECK_FALSE(has_auth_scheme("Basically", "Basic"));
}

TEST_CASE("token cache keys on credentials and scope and honours expiry") {
  token_cache cache;
  const auto now = token_cache::clock::now();
  bearer_challenge ch{"https://auth/t", "svc", "repository:a:pull"};
  cache.put("", ch, "anon", std::chrono::seconds(60), now);
  CHECK(cache.get("", ch, now) == std::optional<std::string>("anon"));
  CHECK_FALSE(cache.get("Basic x", ch, now));
  bearer_challenge other = ch;
  other.scope = "repository:b:pull";
  CHECK_FALSE(cache.get("", other, now));
  CHECK(cache.get("", ch, now + std::chrono::seconds(50)));
  CHECK_FALSE(cache.get("", ch, now + std::chrono::seconds(60)));
  cache.erase("", ch);
  CHECK_FALSE(cache.get("", ch, now));
}
