#include "daemon/ctl/scheduler_api.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value_to.hpp>
#include <boost/url/parse.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace shoal::ctl {

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace asio = boost::asio;

void add_scheduler_api_flags(CLI::App* sub, scheduler_api_options& o) {
  sub->add_option("--scheduler-http", o.url,
                  "shoal-scheduler's HTTP address (its --http-listen), e.g. http://10.0.0.5:7411")
      ->capture_default_str()
      ->envname("SHOAL_SCHEDULER_HTTP");
  sub->add_option("--token", o.token,
                  "the scheduler's --dashboard-token (also $SHOAL_DASHBOARD_TOKEN)")
      ->envname("SHOAL_DASHBOARD_TOKEN");
  sub->add_flag("--json", o.json, "print the API's JSON instead of a table");
}

result<boost::json::value> scheduler_get(const scheduler_api_options& o, const std::string& path) {
  auto u = boost::urls::parse_absolute_uri(o.url);
  if (!u || u->scheme() != "http" || u->host().empty())
    return error(errc::invalid_argument,
                 "--scheduler-http '" + o.url + "' is not an http://HOST:PORT URL");
  const std::string host = u->host();
  const std::string port = u->has_port() ? std::string(u->port()) : "80";
  std::string base = std::string(u->encoded_path());
  while (!base.empty() && base.back() == '/') base.pop_back();
  const std::string where = "scheduler at " + o.url;
  try {
    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(15));
    beast::error_code ec;
    auto eps = resolver.resolve(host, port, ec);
    if (!ec) stream.connect(eps, ec);
    if (ec)
      return error(errc::network, where + ": cannot connect: " + ec.message() +
                                       " (is shoal-scheduler running with its dashboard on? "
                                       "check --scheduler-http)");
    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, base + path, 11};
    req.set(bhttp::field::host, host + ":" + port);
    req.set(bhttp::field::user_agent, "shoalctl");
    req.set(bhttp::field::accept, "application/json");
    if (!o.token.empty()) req.set(bhttp::field::authorization, "Bearer " + o.token);
    bhttp::write(stream, req, ec);
    beast::flat_buffer buf;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    if (!ec) bhttp::read(stream, buf, parser, ec);
    if (ec) return error(errc::network, where + ": " + path + ": " + ec.message());
    auto res = parser.release();
    boost::system::error_code jec;
    auto body = boost::json::parse(res.body(), jec);
    if (res.result() == bhttp::status::unauthorized)
      return error(errc::unauthorized,
                   where + " wants its dashboard token: pass --token (or set "
                           "$SHOAL_DASHBOARD_TOKEN) with the scheduler's --dashboard-token");
    if (res.result() == bhttp::status::not_found && jec)
      return error(errc::not_found, where + ": " + path +
                                        ": 404 (is the dashboard off? shoal-scheduler "
                                        "--dashboard=false serves no API)");
    if (res.result_int() >= 300) {
      std::string msg = !jec && body.is_object() && body.as_object().contains("error")
                            ? std::string(body.as_object().at("error").as_string())
                            : std::string(res.reason());
      return error(res.result() == bhttp::status::not_found ? errc::not_found : errc::network,
                   where + ": " + path + ": " + std::to_string(res.result_int()) + " " + msg);
    }
    if (jec) return error(errc::network, where + ": " + path + ": the reply is not JSON");
    return body;
  } catch (const std::exception& e) {
    return error(errc::network, where + ": " + e.what());
  }
}

double json_number(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  if (v == nullptr) return 0;
  if (v->is_double()) return v->as_double();
  if (v->is_uint64()) return static_cast<double>(v->as_uint64());
  if (v->is_int64()) return static_cast<double>(v->as_int64());
  return 0;
}

std::string json_string(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::string human_bytes(double n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int i = 0;
  while (n >= 1024 && i < 5) {
    n /= 1024;
    ++i;
  }
  char buf[32];
  if (i == 0)
    std::snprintf(buf, sizeof buf, "%.0f B", n);
  else
    std::snprintf(buf, sizeof buf, n < 10 ? "%.2f %s" : "%.1f %s", n, units[i]);
  return buf;
}

std::string human_duration_ms(double ms) {
  const double s = ms / 1000;
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%.0fh%02.0fm", std::floor(s / 3600),
                  std::floor(std::fmod(s, 3600) / 60));
  else
    std::snprintf(buf, sizeof buf, "%.0fd", std::floor(s / 86400));
  return buf;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

}  // namespace shoal::ctl
