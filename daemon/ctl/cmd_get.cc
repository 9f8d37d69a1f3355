// shoalctl get URL --output FILE: a plain HTTP(S) file through the local
// shoald (POST /v1/files on its API): the daemon fetches it through the
// piece cache and the swarm (task id: SHA-256 of the URL without volatile
// query parameters) and puts it at FILE.

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "common/units.h"
#include "daemon/ctl/command.h"

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;

struct get_flags {
  std::string url;
  std::string output;
  std::string digest;
  std::string tag;
  std::string header;
  std::string daemon;
};

template <class Socket>
int exchange(Socket& s, const get_flags& f, const std::string& host) {
  json::object body;
  body["url"] = f.url;
  body["output"] = std::filesystem::absolute(f.output).lexically_normal().string();
  if (!f.digest.empty()) body["digest"] = f.digest;
  if (!f.tag.empty()) body["tag"] = f.tag;
  if (!f.header.empty()) {
    auto colon = f.header.find(':');
    if (colon == std::string::npos || f.header.substr(0, colon) != "Authorization") {
      std::cerr << "shoalctl get: --header takes 'Authorization: <value>'\n";
      return shoal::ctl::exit_usage;
    }
    auto v = f.header.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    body["authorization"] = v;
  }
  http::request<http::string_body> req{http::verb::post, "/v1/files", 11};
  req.set(http::field::host, host);
  req.set(http::field::content_type, "application/json");
  req.body() = json::serialize(body);
  req.prepare_payload();
  boost::system::error_code ec;
  http::write(s, req, ec);
  boost::beast::flat_buffer buf;
  http::response_parser<http::string_body> p;
  p.body_limit(1 << 20);
  if (!ec) http::read(s, buf, p, ec);
  if (ec) {
    std::cerr << "shoalctl get: lost the connection to shoald: " << ec.message() << "\n";
    return shoal::ctl::exit_failure;
  }
  const auto& res = p.get();
  boost::system::error_code jec;
  auto v = json::parse(res.body(), jec);
  if (res.result() != http::status::ok) {
    std::string msg = res.body();
    if (!jec && v.is_object())
      if (auto* e = v.as_object().if_contains("error"); e && e->is_object())
        if (auto* m = e->as_object().if_contains("message"); m && m->is_string())
          msg = std::string(m->as_string());
    if (res.result() == http::status::not_found && msg.find("no route") != std::string::npos)
      msg += " (this shoald has no /v1/files: update it)";
    std::cerr << "shoalctl get: " << f.url << ": " << msg << "\n";
    return shoal::ctl::exit_failure;
  }
  if (!jec && v.is_object()) {
    auto& o = v.as_object();
    std::cerr << "got " << shoal::format_bytes(o["size"].to_number<std::uint64_t>()) << " ("
              << (o["cache_hit"].as_bool() ? "from the cache" : "downloaded") << ", task "
              << std::string(o["task_id"].as_string()).substr(0, 12) << ")\n";
  }
  std::cout << f.output << "\n";
  return shoal::ctl::exit_ok;
}

int run_get(const get_flags& f) {
  std::string addr = f.daemon;
  asio::io_context io;
  boost::system::error_code ec;
  if (addr.rfind("unix:", 0) == 0 || addr.front() == '/') {
    std::string path = addr.rfind("unix://", 0) == 0 ? addr.substr(7)
                       : addr.rfind("unix:", 0) == 0 ? addr.substr(5)
                                                     : addr;
    asio::local::stream_protocol::socket s(io);
    s.connect(asio::local::stream_protocol::endpoint(path), ec);
    if (ec) {
      std::cerr << "shoalctl get: cannot reach shoald at unix:" << path << ": " << ec.message()
                << " (is shoald running? pass --daemon unix:PATH or HOST:PORT)\n";
      return shoal::ctl::exit_failure;
    }
    return exchange(s, f, "localhost");
  }
  auto colon = addr.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "shoalctl get: --daemon '" << addr << "' is neither unix:PATH nor HOST:PORT\n";
    return shoal::ctl::exit_usage;
  }
  asio::ip::tcp::resolver r(io);
  auto eps = r.resolve(addr.substr(0, colon), addr.substr(colon + 1), ec);
  asio::ip::tcp::socket s(io);
  if (!ec) asio::connect(s, eps, ec);
  if (ec) {
    std::cerr << "shoalctl get: cannot reach shoald at " << addr << ": " << ec.message() << "\n";
    return shoal::ctl::exit_failure;
  }
  return exchange(s, f, addr);
}

shoal::ctl::registration reg{"get", [](CLI::App& app, shoal::ctl::runner& run) {
  auto f = std::make_shared<get_flags>();
  auto* sub = app.add_subcommand(
      "get", "Fetch a plain HTTP(S) file through the local shoald (piece cache and swarm)");
  sub->add_option("URL", f->url, "http(s) URL of the file (the server must answer Range requests)")
      ->required();
  sub->add_option("-o,--output", f->output, "Where to put the file")->required();
  sub->add_option("--digest", f->digest, "sha256:<hex> the content must hash to (else not checked as a whole)");
  sub->add_option("--tag", f->tag, "Keeps versions of a mutable URL apart (part of the task id)");
  sub->add_option("--header", f->header, "'Authorization: <value>' for the origin");
  const char* env = std::getenv("SHOAL_DAEMON");
  f->daemon = env && *env ? env : "unix:/run/shoal/shoald.sock";
  sub->add_option("--daemon", f->daemon, "shoald's API: unix:PATH or HOST:PORT; env SHOAL_DAEMON")
      ->capture_default_str();
  run = [f] { return run_get(*f); };
}};

}  // namespace
