// /v1/pulls: start, follow, inspect and cancel model pulls (README: "Models").
#include <boost/json.hpp>

#include "common/log.h"
#include "daemon/api/routes.h"

namespace shoal::api {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;

namespace {

std::string line(const json::object& o) { return json::serialize(o) + "\n"; }

bool wants_stream(const route_context& ctx) {
  auto follow = ctx.query_param("follow");
  if (follow == "true" || follow == "1") return true;
  std::string_view accept = (*ctx.req)[bhttp::field::accept];
  return accept.find("application/x-ndjson") != std::string_view::npos;
}

// Streams NDJSON events derived from the job's state until it ends or the
// client goes away (the job goes on). Events:
//   {"type":"status","pull":{...}}          first, a snapshot
//   {"type":"state","state":"downloading", ...}
//   {"type":"progress","bytes_done":N,"bytes_total":N,"layers":[{"digest","bytes_done","size","complete"}]}
//   {"type":"end","pull":{...}}             last; pull.state is done|failed|cancelled
awaitable<bool> stream_events(route_context ctx, std::shared_ptr<pull_job> job, status st) {
  auto& conn = *ctx.conn;
  if (!co_await conn.begin_stream(*ctx.req, st, "application/x-ndjson")) co_return false;
  json::object first;
  first["type"] = "status";
  first["pull"] = job->to_json();
  if (!co_await conn.write_chunk(line(first))) co_return false;
  auto last_state = job->state();
  std::vector<std::uint64_t> sent(job->layers().size(), 0);
  for (std::size_t i = 0; i < sent.size(); ++i) sent[i] = job->layers()[i].bytes_done;
  auto last_write = std::chrono::steady_clock::now();
  auto last_progress = last_write - std::chrono::seconds(1);
  while (!terminal(job->state())) {
    co_await job->wait_change(std::chrono::steady_clock::now() + std::chrono::milliseconds(500));
    auto now = std::chrono::steady_clock::now();
    std::string out;
    if (job->state() != last_state && !terminal(job->state())) {
      last_state = job->state();
      json::object e;
      e["type"] = "state";
      e["state"] = state_name(last_state);
      if (last_state == pull_state::downloading) {
        e["manifest_digest"] = job->manifest_digest();
        e["bytes_total"] = job->bytes_total();
        json::array layers;
        for (const auto& l : job->layers()) {
          json::object lo;
          lo["digest"] = l.desc.blob.str();
          lo["path"] = l.desc.path;
          lo["format"] = model::format_name(l.desc.format);
          lo["size"] = l.desc.size;
          layers.push_back(std::move(lo));
        }
        e["layers"] = std::move(layers);
      }
      out += line(e);
    }
    if (sent.size() != job->layers().size()) sent.assign(job->layers().size(), 0);
    json::array changed;
    for (std::size_t i = 0; i < sent.size(); ++i) {
      const auto& l = job->layers()[i];
      if (l.bytes_done == sent[i]) continue;
      json::object lo;
      lo["digest"] = l.desc.blob.str();
      lo["bytes_done"] = l.bytes_done;
      lo["size"] = l.desc.size;
      lo["complete"] = l.complete;
      changed.push_back(std::move(lo));
    }
    // progress at most 4 times a second; a heartbeat every 5 s finds a
    // client that went away
    bool due = !changed.empty() && now - last_progress >= std::chrono::milliseconds(250);
    bool heartbeat = now - last_write >= std::chrono::seconds(5);
    if ((due || heartbeat) && !terminal(job->state())) {
      for (std::size_t i = 0; i < sent.size(); ++i) sent[i] = job->layers()[i].bytes_done;
      json::object e;
      e["type"] = "progress";
      e["bytes_done"] = job->bytes_done();
      e["bytes_total"] = job->bytes_total();
      e["layers"] = std::move(changed);
      out += line(e);
      last_progress = now;
    }
    if (!out.empty()) {
      if (!co_await conn.write_chunk(std::move(out))) co_return false;
      last_write = now;
    }
  }
  json::object end;
  end["type"] = "end";
  end["pull"] = job->to_json();
  if (!co_await conn.write_chunk(line(end))) co_return false;
  co_return co_await conn.end_stream();
}

awaitable<bool> post_pull(route_context ctx, pull_manager* pulls) {
  auto req = parse_pull_request(ctx.req->body());
  if (!req) co_return co_await reply_error(ctx, req.error());
  bool attached = false;
  auto job = pulls->start(std::move(*req), &attached);
  if (!job) {
    if (job.error().is(errc::too_large))
      co_return co_await reply_error(ctx, status::too_many_requests, "too_many_pulls",
                                     job.error().message);
    co_return co_await reply_error(ctx, job.error());
  }
  status st = attached ? status::ok : status::accepted;
  if (wants_stream(ctx)) co_return co_await stream_events(ctx, *job, st);
  json::value v = (*job)->to_json();
  co_return co_await reply_json(ctx, st, std::move(v));
}

awaitable<bool> list_pulls(route_context ctx, pull_manager* pulls) {
  json::array a;
  for (const auto& j : pulls->list()) a.push_back(j->to_json());
  json::object o;
  o["pulls"] = std::move(a);
  json::value v = std::move(o);
  co_return co_await reply_json(ctx, status::ok, std::move(v));
}

awaitable<bool> get_pull(route_context ctx, pull_manager* pulls) {
  auto job = pulls->find(ctx.param("id"));
  if (!job)
    co_return co_await reply_error(ctx, status::not_found, "not_found",
                                   "no pull with id '" + ctx.param("id") + "'");
  if (wants_stream(ctx)) co_return co_await stream_events(ctx, job, status::ok);
  json::value v = job->to_json();
  co_return co_await reply_json(ctx, status::ok, std::move(v));
}

awaitable<bool> pull_events(route_context ctx, pull_manager* pulls) {
  auto job = pulls->find(ctx.param("id"));
  if (!job)
    co_return co_await reply_error(ctx, status::not_found, "not_found",
                                   "no pull with id '" + ctx.param("id") + "'");
  co_return co_await stream_events(ctx, job, status::ok);
}

awaitable<bool> delete_pull(route_context ctx, pull_manager* pulls) {
  auto id = ctx.param("id");
  if (auto r = pulls->cancel(id); !r) co_return co_await reply_error(ctx, r.error());
  auto job = pulls->find(id);
  // Wait (briefly) for the job to wind down, so the answer shows its end state.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (job && !terminal(job->state()) && std::chrono::steady_clock::now() < until)
    co_await job->wait_change(until);
  json::value v = json::object{};
  if (job) v = job->to_json();
  co_return co_await reply_json(ctx, status::ok, std::move(v));
}

}  // namespace

void add_pull_routes(router& r, pull_manager& pulls) {
  auto* p = &pulls;
  using bhttp::verb;
  r.add(verb::post, "/v1/pulls", [p](route_context ctx) { return post_pull(std::move(ctx), p); });
  r.add(verb::get, "/v1/pulls", [p](route_context ctx) { return list_pulls(std::move(ctx), p); });
  r.add(verb::get, "/v1/pulls/{id}", [p](route_context ctx) { return get_pull(std::move(ctx), p); });
  r.add(verb::delete_, "/v1/pulls/{id}",
        [p](route_context ctx) { return delete_pull(std::move(ctx), p); });
  r.add(verb::get, "/v1/pulls/{id}/events",
        [p](route_context ctx) { return pull_events(std::move(ctx), p); });
}

}  // namespace shoal::api
