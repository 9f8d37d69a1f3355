#pragma once
// shoalctl's client for shoal-scheduler's JSON API (/api/v1/..., served on the
// scheduler's --http-listen): one blocking GET per call, for commands such as
// `shoalctl hosts` and `shoalctl tasks`.

#include <CLI/CLI.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shoal::ctl {

struct scheduler_api_options {
  std::string url = "http://127.0.0.1:7411";  // --scheduler-http
  std::string token;                          // --token / $SHOAL_DASHBOARD_TOKEN
  bool json = false;                          // --json: print the API's JSON as is
};

// Adds --scheduler-http, --token and --json to a subcommand.
void add_scheduler_api_flags(CLI::App* sub, scheduler_api_options& o);

// GET url + path (e.g. "/api/v1/hosts") and parse the JSON body. Errors say
// what failed and what to do (unreachable, 401 without the token, ...).
result<boost::json::value> scheduler_get(const scheduler_api_options& o, const std::string& path);

// A field of an API object: a number (0 when absent or not a number), a
// string (empty when absent or not a string).
double json_number(const boost::json::object& o, std::string_view key);
std::string json_string(const boost::json::object& o, std::string_view key);

// Formatting for tables.
std::string human_bytes(double n);
std::string human_duration_ms(double ms);
// Prints rows as a left-aligned table with two spaces between columns.
void print_table(const std::vector<std::vector<std::string>>& rows);

}  // namespace shoal::ctl
