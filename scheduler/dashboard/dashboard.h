#pragma once
// The operator dashboard and its JSON API on the scheduler's HTTP port:
//   GET  /                      the page (embedded front end), /assets/*
//   GET  /api/v1/overview       hosts online, active tasks, bytes, throughput
//   GET  /api/v1/hosts          every host
//   GET  /api/v1/tasks          every task
//   GET  /api/v1/tasks/{id}     one task: peers, parent -> child edges
//   POST /api/v1/preheat        start a preheat (when a preheat backend is set)
//   GET  /api/v1/preheat/{id}   its progress
// With a token, every one of these needs it: `Authorization: Bearer TOKEN`,
// or the HttpOnly cookie that `/?token=TOKEN` sets for the page.
//
// Threading: runs on the HTTP server's executor, which must be the
// scheduler's owner thread (the engine's state is read synchronously there).

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <string>
#include <string_view>

#include "common/http.h"
#include "common/result.h"
#include "scheduler/dashboard/views.h"

namespace shoal::scheduler::dashboard {

// Hooks to a preheat backend (scheduler/preheat); unset = preheat not offered.
struct preheat_hooks {
  // Starts a preheat from a JSON body {"reference": "..."}; returns the JSON to send
  // (201) or an error (400 for bad input, 503 otherwise).
  std::function<result<std::string>(std::string_view body)> start;
  // The JSON of one preheat, or an error (404 when unknown).
  std::function<result<std::string>(std::string_view id)> status;
};

struct options {
  std::string token;  // empty: no authentication (loopback addresses only)
  std::string version;
  preheat_hooks preheat;
};

class server {
 public:
  server(const engine& state, const clock& clk, options opts);

  // True for the paths this server owns (everything but /healthz and /metrics).
  static bool owns(std::string_view path);
  // Handles one request on a path it owns; returns false to close the connection.
  boost::asio::awaitable<bool> handle(http::request req, boost::beast::tcp_stream& stream);

  // Exposed for tests: does this request carry the token (header or cookie)?
  bool authorized(const http::request& req) const;

 private:
  boost::asio::awaitable<bool> api(http::request req, boost::beast::tcp_stream& stream,
                                   std::string_view path);
  boost::asio::awaitable<bool> page(http::request req, boost::beast::tcp_stream& stream,
                                    std::string_view path, std::string_view query);

  view_context ctx_;
  options opts_;
};

// Constant-time comparison (a token check must not leak its length of match).
bool token_equal(std::string_view a, std::string_view b);

}  // namespace shoal::scheduler::dashboard
