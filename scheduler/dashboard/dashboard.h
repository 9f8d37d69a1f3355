#pragma once
// The operator dashboard and its JSON API on the scheduler's HTTP port:
//   GET  /                      the page (embedded front end), /assets/*
//   GET  /api/v1/overview       hosts online, active tasks, bytes, throughput
//   GET  /api/v1/hosts          every host
//   GET  /api/v1/tasks          every task
//   GET  /api/v1/tasks/{id}     one task: peers, parent -> child edges
//   POST /api/v1/preheat        start a preheat {"reference": "..."} (seed hosts fetch it)
//   GET  /api/v1/preheat        every preheat job kept, newest first
//   GET  /api/v1/preheat/{id}   one job and each seed's progress
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
#include "scheduler/preheat/preheat_manager.h"

namespace shoal::scheduler::dashboard {

struct options {
  std::string token;  // empty: no authentication (loopback addresses only)
  std::string version;
  preheat_manager* preheat = nullptr;  // null: preheat not offered
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
