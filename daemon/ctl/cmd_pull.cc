// shoalctl pull REF --output DIR: asks the local shoald (its API, README
// "Models") to put the model at DIR, and shows the progress: a live bar per
// layer and in total on a terminal, plain lines otherwise.
//
// The pull runs inside shoald: if shoalctl is killed the pull goes on, and
// running the same command again attaches to it (or finds DIR up to date).
// Ctrl-C (SIGINT/SIGTERM) cancels the pull in the daemon before exiting.

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>

#include "daemon/ctl/command.h"

namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using local = asio::local::stream_protocol;

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_signal(int) { g_interrupted = 1; }

struct options {
  std::string reference;
  std::string output;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  std::string daemon;
  bool quiet = false;
};

struct daemon_addr {
  bool is_unix = true;
  std::string path;
  std::string host, port;
  std::string text;
};

bool parse_daemon(const std::string& s, daemon_addr& out, std::string& why) {
  out.text = s;
  if (s.rfind("unix://", 0) == 0) {
    out.path = s.substr(7);
  } else if (s.rfind("unix:", 0) == 0) {
    out.path = s.substr(5);
  } else if (!s.empty() && s.front() == '/') {
    out.path = s;
  } else {
    out.is_unix = false;
    auto c = s.rfind(':');
    if (c == std::string::npos || c == 0 || c + 1 == s.size()) {
      why = "'" + s + "' is neither unix:PATH nor HOST:PORT";
      return false;
    }
    out.host = s.substr(0, c);
    out.port = s.substr(c + 1);
    if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']')
      out.host = out.host.substr(1, out.host.size() - 2);
    return true;
  }
  if (out.path.empty()) {
    why = "empty socket path";
    return false;
  }
  return true;
}

std::string human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

std::string duration(double secs) {
  if (secs < 0 || secs > 1e7) return "?";
  auto s = static_cast<long>(secs + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof(buf), "%lds", s);
  return buf;
}

std::string bar(double frac, int width) {
  if (frac < 0) frac = 0;
  if (frac > 1) frac = 1;
  int full = static_cast<int>(frac * width);
  std::string b = "[";
  for (int i = 0; i < width; ++i) b += i < full ? '=' : (i == full ? '>' : ' ');
  return b + "]";
}

// Renders progress events: live bars on a terminal, plain lines otherwise.
class progress_view {
 public:
  explicit progress_view(bool tty, bool quiet) : tty_(tty), quiet_(quiet) {}

  void on_event(const json::object& e) {
    auto type = std::string(e.at("type").as_string());
    if (type == "status" || type == "end") {
      const auto& p = e.at("pull").as_object();
      id_ = std::string(p.at("id").as_string());
      load_layers(p);
      state_ = std::string(p.at("state").as_string());
    } else if (type == "state") {
      state_ = std::string(e.at("state").as_string());
      if (auto* l = e.if_contains("layers")) load_layer_list(l->as_array());
      if (!tty_ && !quiet_) {
        if (state_ == "downloading")
          std::cerr << "manifest " << json::value_to<std::string>(e.at("manifest_digest")) << ": "
                    << layers_.size() << " layers, " << human(total()) << "\n";
        else if (state_ == "laying_out")
          std::cerr << "laying out files\n";
      }
    } else if (type == "progress") {
      for (const auto& lv : e.at("layers").as_array()) {
        const auto& lo = lv.as_object();
        auto d = std::string(lo.at("digest").as_string());
        auto it = layers_.find(d);
        if (it == layers_.end()) continue;
        bool was = it->second.complete;
        it->second.done = lo.at("bytes_done").to_number<std::uint64_t>();
        it->second.complete = lo.at("complete").as_bool();
        if (!tty_ && !quiet_ && it->second.complete && !was)
          std::cerr << "layer done: " << name(it->second) << " (" << human(it->second.size)
                    << ")\n";
      }
    }
    sample();
    if (tty_ && !quiet_) draw(type == "end");
    else if (!quiet_ && type == "progress" && state_ == "downloading") {
      auto now = std::chrono::steady_clock::now();
      if (now - last_plain_ >= std::chrono::seconds(5)) {
        last_plain_ = now;
        std::cerr << "progress: " << human(done()) << " / " << human(total()) << " ("
                  << percent(done(), total()) << "%), " << human(rate_) << "/s\n";
      }
    }
  }
  const std::string& id() const { return id_; }

 private:
  struct layer {
    std::string digest, path, format;
    std::uint64_t size = 0, done = 0;
    bool complete = false;
    int order = 0;
  };
  static std::string name(const layer& l) {
    std::string n = l.path.empty() ? l.digest.substr(0, 19) : l.path;
    if (l.format != "raw") n += " (" + l.format + ")";
    return n;
  }
  static int percent(double a, double b) { return b > 0 ? static_cast<int>(100.0 * a / b) : 100; }
  void load_layers(const json::object& p) {
    if (auto* l = p.if_contains("layers")) load_layer_list(l->as_array());
  }
  void load_layer_list(const json::array& a) {
    int order = 0;
    for (const auto& lv : a) {
      const auto& lo = lv.as_object();
      auto d = std::string(lo.at("digest").as_string());
      auto& l = layers_[d];
      l.digest = d;
      l.path = std::string(lo.at("path").as_string());
      l.format = std::string(lo.at("format").as_string());
      l.size = lo.at("size").to_number<std::uint64_t>();
      if (auto* x = lo.if_contains("bytes_done")) l.done = x->to_number<std::uint64_t>();
      if (auto* x = lo.if_contains("complete")) l.complete = x->as_bool();
      l.order = order++;
    }
  }
  double total() const {
    double t = 0;
    for (const auto& [d, l] : layers_) t += static_cast<double>(l.size);
    return t;
  }
  double done() const {
    double t = 0;
    for (const auto& [d, l] : layers_) t += static_cast<double>(l.done);
    return t;
  }
  void sample() {
    auto now = std::chrono::steady_clock::now();
    samples_.push_back({now, done()});
    while (samples_.size() > 2 && now - samples_.front().first > std::chrono::seconds(5))
      samples_.pop_front();
    if (samples_.size() >= 2) {
      double dt = std::chrono::duration<double>(samples_.back().first - samples_.front().first).count();
      if (dt > 0.2) rate_ = (samples_.back().second - samples_.front().second) / dt;
    }
  }
  void draw(bool final) {
    std::string out;
    for (int i = 0; i < drawn_; ++i) out += "\x1b[1A\x1b[2K";
    out += "\r";
    std::vector<const layer*> shown;
    for (const auto& [d, l] : layers_) shown.push_back(&l);
    std::sort(shown.begin(), shown.end(), [](const layer* a, const layer* b) {
      // in progress first, then waiting, then complete; manifest order within
      auto rank = [](const layer* l) { return l->complete ? 2 : (l->done > 0 ? 0 : 1); };
      return rank(a) != rank(b) ? rank(a) < rank(b) : a->order < b->order;
    });
    const std::size_t max_rows = 8;
    int lines = 0;
    char buf[512];
    for (std::size_t i = 0; i < shown.size() && i < max_rows; ++i) {
      const auto& l = *shown[i];
      auto n = name(l);
      if (n.size() > 36) n = "..." + n.substr(n.size() - 33);
      std::snprintf(buf, sizeof(buf), "%-36s %s %3d%% %10s / %-10s\n", n.c_str(),
                    bar(l.size ? double(l.done) / double(l.size) : 1.0, 20).c_str(),
                    percent(double(l.done), double(l.size)), human(double(l.done)).c_str(),
                    human(double(l.size)).c_str());
      out += buf;
      ++lines;
    }
    if (shown.size() > max_rows) {
      std::size_t complete = 0;
      for (std::size_t i = max_rows; i < shown.size(); ++i) complete += shown[i]->complete;
      out += "... " + std::to_string(shown.size() - max_rows) + " more layers (" +
             std::to_string(complete) + " complete)\n";
      ++lines;
    }
    double remaining = total() - done();
    std::string eta = rate_ > 1 ? duration(remaining / rate_) : "?";
    std::snprintf(buf, sizeof(buf), "%-36s %s %3d%% %10s / %-10s %10s/s  ETA %s  [%s]\n", "total",
                  bar(total() > 0 ? done() / total() : 1.0, 20).c_str(),
                  percent(done(), total()), human(done()).c_str(), human(total()).c_str(),
                  human(rate_).c_str(), final ? "0s" : eta.c_str(), state_.c_str());
    out += buf;
    ++lines;
    std::cerr << out << std::flush;
    drawn_ = lines;
  }

  bool tty_, quiet_;
  std::string id_, state_;
  std::map<std::string, layer> layers_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, double>> samples_;
  double rate_ = 0;
  int drawn_ = 0;
  std::chrono::steady_clock::time_point last_plain_{};
};

// One HTTP exchange over an already connected socket (sync Beast).
template <class Socket>
int run_pull(Socket& sock, const options& o, const daemon_addr& addr, std::string& pull_id) {
  json::object body;
  body["reference"] = o.reference;
  body["output_dir"] = o.output;
  json::array inc, exc;
  for (const auto& s : o.include) inc.emplace_back(s);
  for (const auto& s : o.exclude) exc.emplace_back(s);
  body["include"] = std::move(inc);
  body["exclude"] = std::move(exc);
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/v1/pulls?follow=true", 11};
  req.set(bhttp::field::host, "shoald");
  req.set(bhttp::field::content_type, "application/json");
  req.set(bhttp::field::accept, "application/x-ndjson");
  req.set(bhttp::field::user_agent, "shoalctl");
  req.body() = json::serialize(body);
  req.prepare_payload();
  boost::system::error_code ec;
  bhttp::write(sock, req, ec);
  if (ec) {
    std::cerr << "shoalctl: sending the pull to shoald at " << addr.text << ": " << ec.message()
              << "\n";
    return shoal::ctl::exit_failure;
  }
  boost::beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(boost::none);
  bhttp::read_header(sock, buf, parser, ec);
  if (ec) {
    std::cerr << "shoalctl: reading shoald's answer: " << ec.message() << "\n";
    return shoal::ctl::exit_failure;
  }
  const auto st = parser.get().result_int();
  if (st != 200 && st != 202) {
    bhttp::read(sock, buf, parser, ec);
    std::string msg = parser.get().body();
    boost::system::error_code jec;
    auto v = json::parse(msg, jec);
    if (!jec && v.is_object() && v.as_object().if_contains("error"))
      msg = json::value_to<std::string>(v.at("error").at("message"));
    std::cerr << "shoalctl: pull refused (" << st << "): " << msg << "\n";
    return st == 400 ? shoal::ctl::exit_usage : shoal::ctl::exit_failure;
  }
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  progress_view view(tty, o.quiet);
  if (!o.quiet) std::cerr << "pulling " << o.reference << " into " << o.output << "\n";
  std::optional<json::object> end;
  const int fd = sock.native_handle();
  while (!parser.is_done()) {
    if (g_interrupted) return 130;
    if (buf.size() == 0) {
      pollfd p{fd, POLLIN, 0};
      int r = ::poll(&p, 1, 250);
      if (r == 0 || (r < 0 && errno == EINTR)) continue;
    }
    bhttp::read_some(sock, buf, parser, ec);
    if (ec) break;
    auto& b = parser.get().body();
    std::size_t start = 0;
    for (;;) {
      auto nl = b.find('\n', start);
      if (nl == std::string::npos) break;
      boost::system::error_code jec;
      auto v = json::parse(std::string_view(b).substr(start, nl - start), jec);
      start = nl + 1;
      if (jec || !v.is_object()) continue;
      const auto& e = v.as_object();
      try {
        view.on_event(e);
        pull_id = view.id();
        if (e.at("type").as_string() == "end") end = e.at("pull").as_object();
      } catch (const std::exception& ex) {
        std::cerr << "shoalctl: ignoring a malformed event from shoald: " << ex.what() << "\n";
      }
    }
    b.erase(0, start);
  }
  if (!end) {
    if (g_interrupted) return 130;
    std::cerr << "shoalctl: lost the connection to shoald at " << addr.text
              << (ec ? ": " + ec.message() : std::string())
              << " (the pull may still be running: run the same command again to follow it)\n";
    return shoal::ctl::exit_failure;
  }
  auto state = std::string(end->at("state").as_string());
  if (state == "done") {
    const auto& lay = end->at("layout").as_object();
    if (end->at("noop").as_bool())
      std::cout << "up to date: " << o.output << " already holds "
                << json::value_to<std::string>(end->at("manifest_digest")) << "\n";
    else
      std::cout << "done: " << lay.at("files").to_number<std::uint64_t>() << " files in "
                << o.output << " (" << lay.at("linked").to_number<std::uint64_t>()
                << " hard-linked, " << lay.at("copied").to_number<std::uint64_t>() << " copied, "
                << lay.at("extracted_layers").to_number<std::uint64_t>()
                << " tar layers extracted) from "
                << json::value_to<std::string>(end->at("manifest_digest")) << "\n";
    return shoal::ctl::exit_ok;
  }
  std::string msg = state;
  if (auto* e = end->if_contains("error"))
    msg = json::value_to<std::string>(e->at("message"));
  std::cerr << "shoalctl: pull " << state << ": " << msg << "\n";
  return shoal::ctl::exit_failure;
}

template <class Socket>
void send_cancel(Socket& sock, const std::string& id) {
  bhttp::request<bhttp::empty_body> req{bhttp::verb::delete_, "/v1/pulls/" + id, 11};
  req.set(bhttp::field::host, "shoald");
  boost::system::error_code ec;
  bhttp::write(sock, req, ec);
  if (ec) return;
  boost::beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(sock, buf, res, ec);
}

template <class Fn>
int with_socket(const daemon_addr& addr, Fn&& fn) {
  asio::io_context io;
  boost::system::error_code ec;
  if (addr.is_unix) {
    local::socket s(io);
    s.connect(local::endpoint(addr.path), ec);
    if (ec) {
      std::cerr << "shoalctl: cannot reach shoald at unix:" << addr.path << ": " << ec.message()
                << " (is shoald running? pass --daemon unix:PATH or HOST:PORT)\n";
      return shoal::ctl::exit_failure;
    }
    return fn(s);
  }
  asio::ip::tcp::resolver res(io);
  auto eps = res.resolve(addr.host, addr.port, ec);
  asio::ip::tcp::socket s(io);
  if (!ec) asio::connect(s, eps, ec);
  if (ec) {
    std::cerr << "shoalctl: cannot reach shoald at " << addr.text << ": " << ec.message()
              << " (is its --api-listen set? pass --daemon unix:PATH or HOST:PORT)\n";
    return shoal::ctl::exit_failure;
  }
  return fn(s);
}

int do_pull(options o) {
  daemon_addr addr;
  std::string why;
  if (!parse_daemon(o.daemon, addr, why)) {
    std::cerr << "shoalctl: --daemon: " << why << "\n";
    return shoal::ctl::exit_usage;
  }
  std::error_code fec;
  o.output = std::filesystem::absolute(o.output, fec).lexically_normal().string();
  while (o.output.size() > 1 && o.output.back() == '/') o.output.pop_back();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::string id;
  int rc = with_socket(addr, [&](auto& s) { return run_pull(s, o, addr, id); });
  if (rc == 130) {
    if (!id.empty()) {
      std::cerr << "\nshoalctl: interrupted: cancelling pull " << id << "\n";
      with_socket(addr, [&](auto& s) {
        send_cancel(s, id);
        return 0;
      });
    }
    return shoal::ctl::exit_failure;
  }
  return rc;
}

shoal::ctl::registration reg{"pull", [](CLI::App& app, shoal::ctl::runner& run) {
  auto o = std::make_shared<options>();
  const char* env = std::getenv("SHOAL_DAEMON");
  o->daemon = env && *env ? env : "unix:/run/shoal/shoald.sock";
  auto* sub = app.add_subcommand(
      "pull", "Put a model (OCI/ModelPack artifact) into a directory through the local shoald");
  sub->add_option("reference", o->reference, "host[:port]/repo:tag or host[:port]/repo@sha256:...")
      ->required();
  sub->add_option("-o,--output", o->output, "Directory to create (or update) with the model's files")
      ->required();
  sub->add_option("--include", o->include,
                  "Only files matching this glob (repeatable; '*' within a directory, '**' "
                  "across; without '/' it also matches the base name)");
  sub->add_option("--exclude", o->exclude, "Skip files matching this glob (repeatable)");
  sub->add_option("--daemon", o->daemon,
                  "shoald's API: unix:PATH or HOST:PORT (its --api-listen); env SHOAL_DAEMON")
      ->capture_default_str();
  sub->add_flag("-q,--quiet", o->quiet, "No progress output, only the result");
  run = [o] { return do_pull(*o); };
}};

}  // namespace
