// The local API's router, request parsing, and the unix socket listener.
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <random>
#include <thread>

#include "daemon/api/pulls.h"
#include "daemon/api/router.h"
#include "daemon/api/server.h"

using namespace shoal;
using namespace shoal::api;
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

class fake_connection : public connection {
 public:
  status st{};
  std::string body;
  std::vector<std::string> chunks;
  bool ended = false;
  asio::awaitable<bool> send(const request&, status s, std::string b, std::string_view) override {
    st = s;
    body = std::move(b);
    co_return true;
  }
  asio::awaitable<bool> begin_stream(const request&, status s, std::string_view) override {
    st = s;
    co_return true;
  }
  asio::awaitable<bool> write_chunk(std::string d) override {
    chunks.push_back(std::move(d));
    co_return true;
  }
  asio::awaitable<bool> end_stream() override {
    ended = true;
    co_return true;
  }
  const char* transport() const override { return "fake"; }
};

void run(asio::io_context& io, const router& r, request req, fake_connection& c) {
  asio::co_spawn(io, r.dispatch(std::move(req), c), asio::detached);
  io.run();
  io.restart();
}

request make(bhttp::verb v, std::string target, std::string body = "") {
  request req{v, target, 11};
  req.body() = std::move(body);
  req.prepare_payload();
  return req;
}

asio::awaitable<bool> echo(route_context ctx) {
  json::object o;
  o["id"] = ctx.param("id");
  o["follow"] = ctx.query_param("follow");
  json::value v = std::move(o);
  co_return co_await reply_json(ctx, status::ok, std::move(v));
}

std::string error_code(const std::string& body) {
  return std::string(json::parse(body).at("error").at("code").as_string());
}

}  // namespace

TEST_CASE("router: parameters, query, 404 and 405") {
  asio::io_context io;
  router r;
  r.add(bhttp::verb::get, "/v1/pulls/{id}", [](route_context ctx) { return echo(std::move(ctx)); });
  r.add(bhttp::verb::delete_, "/v1/pulls/{id}", [](route_context ctx) { return echo(std::move(ctx)); });
  fake_connection c;
  run(io, r, make(bhttp::verb::get, "/v1/pulls/p123?follow=true"), c);
  CHECK(c.st == status::ok);
  auto v = json::parse(c.body);
  CHECK(v.at("id").as_string() == "p123");
  CHECK(v.at("follow").as_string() == "true");

  fake_connection nf;
  run(io, r, make(bhttp::verb::get, "/v1/nothing"), nf);
  CHECK(nf.st == status::not_found);
  CHECK(error_code(nf.body) == "not_found");

  fake_connection na;
  run(io, r, make(bhttp::verb::post, "/v1/pulls/p1"), na);
  CHECK(na.st == status::method_not_allowed);
  CHECK(error_code(na.body) == "method_not_allowed");
  CHECK(json::parse(na.body).at("error").at("message").as_string().find("GET, DELETE") !=
        json::string::npos);
}

TEST_CASE("pull requests are validated") {
  auto ok = parse_pull_request(
      R"({"reference":"127.0.0.1:5000/models/x:v1","output_dir":"/data/models/x/","include":["*.json"]})");
  REQUIRE(ok);
  CHECK(ok->output_dir == "/data/models/x");
  CHECK(ok->include == std::vector<std::string>{"*.json"});
  CHECK_FALSE(parse_pull_request("nope"));
  CHECK_FALSE(parse_pull_request(R"({"reference":"a/b:v1"})"));
  auto rel = parse_pull_request(R"({"reference":"h:5000/a:v1","output_dir":"rel/dir"})");
  REQUIRE_FALSE(rel);
  CHECK(rel.error().message.find("absolute") != std::string::npos);
  CHECK_FALSE(parse_pull_request(R"({"reference":"h:5000/a:v1","output_dir":"/"})"));
  CHECK_FALSE(parse_pull_request(R"({"reference":"h:5000/A B","output_dir":"/x"})"));
  CHECK_FALSE(parse_pull_request(R"({"reference":"h:5000/a:v1","output_dir":"/x","include":"*"})"));
  CHECK_FALSE(parse_pull_request(R"({"reference":"h:5000/a:v1","output_dir":"/x","exclude":["[x"]})"));
  auto unknown = parse_pull_request(R"({"reference":"h:5000/a:v1","output_dir":"/x","outptu":1})");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message.find("outptu") != std::string::npos);
}

TEST_CASE("errors map to statuses and codes") {
  CHECK(status_for(error(errc::invalid_argument, "")).first == status::bad_request);
  CHECK(status_for(error(errc::not_found, "")).first == status::not_found);
  CHECK(status_for(error(errc::busy, "")).first == status::conflict);
  CHECK(status_for(error(errc::no_space, "")).second == "no_space");
  CHECK(status_for(error(errc::unauthorized, "")).first == status::unauthorized);
}

TEST_CASE("unix socket: served over HTTP, 0660, stale socket replaced, live one refused") {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / ("shoal-api-" + std::to_string(rd()));
  auto path = (dir / "sub" / "s.sock").string();
  asio::io_context io;
  router r;
  r.add(bhttp::verb::get, "/v1/pulls/{id}", [](route_context ctx) { return echo(std::move(ctx)); });
  {
    server srv(io.get_executor(), r);
    REQUIRE(srv.listen_unix(path));
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0660);
    REQUIRE(::stat((dir / "sub").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0755);
    // a second server on the same live socket is refused
    server other(io.get_executor(), r);
    auto again = other.listen_unix(path);
    REQUIRE_FALSE(again);
    CHECK(again.error().message.find("another") != std::string::npos);

    srv.start();
    std::string answer;
    std::thread client([&] {
      asio::io_context cio;
      asio::local::stream_protocol::socket s(cio);
      s.connect(asio::local::stream_protocol::endpoint(path));
      request req{bhttp::verb::get, "/v1/pulls/abc", 11};
      req.set(bhttp::field::host, "x");
      req.keep_alive(false);
      bhttp::write(s, req);
      boost::beast::flat_buffer buf;
      bhttp::response<bhttp::string_body> res;
      bhttp::read(s, buf, res);
      answer = res.body();
    });
    while (answer.empty()) io.run_one_for(std::chrono::milliseconds(50));
    client.join();
    CHECK(json::parse(answer).at("id").as_string() == "abc");
    srv.stop();
    io.poll();
    CHECK_FALSE(std::filesystem::exists(path));  // removed on stop
  }
  // a stale socket file (no one listening) is replaced
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    ::close(fd);  // the file stays, nobody listens
    server srv(io.get_executor(), r);
    CHECK(srv.listen_unix(path));
    srv.stop();
  }
  // a regular file in the way is refused
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    std::fclose(f);
    server srv(io.get_executor(), r);
    CHECK_FALSE(srv.listen_unix(path));
  }
  std::filesystem::remove_all(dir);
}
