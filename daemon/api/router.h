#pragma once
// The local API's routing (daemon/api/README.md): routes are added by
// pattern ("/v1/pulls/{id}"), each area in its own file (routes_*.cc) through
// an add_*_routes(router&, ...) function that main.cc calls, so a new area
// (say /v1/files) is one new file and one line in main.cc.
//
// Handlers write their own response through `connection`, which hides
// whether the client came over the unix socket or TCP, and can stream
// (chunked transfer encoding, for NDJSON progress).
//
// Errors are JSON: {"error":{"code":"not_found","message":"..."}}.
//
// Threading: the daemon's I/O executor, like everything the API touches.

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/value.hpp>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shoal::api {

namespace bhttp = boost::beast::http;
using request = bhttp::request<bhttp::string_body>;
using status = bhttp::status;

// One client connection, whatever its transport.
class connection {
 public:
  virtual ~connection() = default;
  // A whole response with a string body; false when the write failed.
  virtual boost::asio::awaitable<bool> send(const request& req, status st, std::string body,
                                            std::string_view content_type) = 0;
  // A streamed response: header (chunked), chunks, then the last chunk.
  virtual boost::asio::awaitable<bool> begin_stream(const request& req, status st,
                                                    std::string_view content_type) = 0;
  virtual boost::asio::awaitable<bool> write_chunk(std::string data) = 0;
  virtual boost::asio::awaitable<bool> end_stream() = 0;
  // "unix" or "tcp" (for logs).
  virtual const char* transport() const = 0;
};

// What a handler gets: the request, the path parameters and the query.
struct route_context {
  const request* req = nullptr;
  connection* conn = nullptr;
  std::map<std::string, std::string> params;  // {id} -> value
  std::map<std::string, std::string> query;   // decoded query parameters
  std::string param(const std::string& k) const {
    auto it = params.find(k);
    return it == params.end() ? std::string() : it->second;
  }
  std::string query_param(const std::string& k) const {
    auto it = query.find(k);
    return it == query.end() ? std::string() : it->second;
  }
};

// Returns false to close the connection.
using route_handler = std::function<boost::asio::awaitable<bool>(route_context ctx)>;

class router {
 public:
  // `pattern`: "/v1/pulls/{id}/events"; a {name} segment matches one
  // non-empty path segment (percent-decoded).
  void add(bhttp::verb method, std::string pattern, route_handler h);
  // Routes one request: 404 for unknown paths, 405 (with Allow) when the
  // path exists for other methods.
  boost::asio::awaitable<bool> dispatch(request req, connection& conn) const;

 private:
  struct route {
    bhttp::verb method;
    std::vector<std::string> segments;
    route_handler handler;
  };
  std::vector<route> routes_;
};

// Maps an error code to the API's error code text and HTTP status.
std::pair<status, std::string> status_for(const error& e);

// {"error":{"code":code,"message":message}}
boost::asio::awaitable<bool> reply_error(const route_context& ctx, status st, std::string code,
                                         std::string message);
boost::asio::awaitable<bool> reply_error(const route_context& ctx, const error& e);
// (GCC 12: build the value as a named local before co_await-ing this.)
boost::asio::awaitable<bool> reply_json(const route_context& ctx, status st,
                                        boost::json::value v);

}  // namespace shoal::api
