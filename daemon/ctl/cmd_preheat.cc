// shoalctl preheat REF: asks the scheduler to have every seed host fetch
// every blob of a model now (scheduler/README.md "Preheat"), then follows
// the job until it ends.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/units.h"
#include "daemon/ctl/command.h"
#include "daemon/ctl/credentials.h"
#include "shoal/v1/scheduler.grpc.pb.h"

namespace {

struct preheat_flags {
  std::string ref;
  std::string scheduler = "127.0.0.1:7410";
  std::string username;
  std::string password;
  bool password_stdin = false;
  bool no_wait = false;
  double timeout = 0;  // seconds, 0 = until the job ends
  bool quiet = false;
};

std::string progress_line(const shoal::v1::PreheatJob& j) {
  std::ostringstream o;
  o << "preheat " << j.id() << " " << j.state();
  for (const auto& s : j.seeds()) {
    o << " | " << s.host_id() << " " << s.state();
    if (s.blobs_total() > 0)
      o << " " << s.blobs_done() << "/" << s.blobs_total() << " blobs "
        << shoal::format_bytes(s.bytes_done()) << "/" << shoal::format_bytes(s.bytes_total());
  }
  return o.str();
}

int run_preheat(const preheat_flags& f) {
  using namespace shoal;
  auto channel = grpc::CreateChannel(f.scheduler, grpc::InsecureChannelCredentials());
  auto stub = v1::Scheduler::NewStub(channel);
  auto deadline_in = [](double s) {
    return std::chrono::system_clock::now() +
           std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(s));
  };
  v1::PreheatRequest req;
  req.set_reference(f.ref);
  std::string user = f.username, pass = f.password;
  if (user.empty())
    if (const char* u = std::getenv("SHOAL_REGISTRY_USERNAME")) user = u;
  if (f.password_stdin) {
    std::getline(std::cin, pass);
  } else if (pass.empty()) {
    if (const char* p = std::getenv("SHOAL_REGISTRY_PASSWORD")) pass = p;
  }
  if (!user.empty()) req.set_authorization(shoal::ctl::basic_authorization(user, pass));
  v1::PreheatJob job;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_in(10));
    auto st = stub->Preheat(&ctx, req, &job);
    if (!st.ok()) {
      std::cerr << "shoalctl preheat: " << f.ref << " via scheduler " << f.scheduler << ": "
                << st.error_message();
      if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
          st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
        std::cerr << " (is shoal-scheduler running at " << f.scheduler << "? see --scheduler)";
      std::cerr << "\n";
      return ctl::exit_failure;
    }
  }
  if (!f.quiet)
    std::cerr << "preheat " << job.id() << " of " << job.reference() << " started on "
              << job.seeds_size() << " seed host(s)\n";
  if (f.no_wait) {
    std::cout << job.id() << "\n";
    return ctl::exit_ok;
  }
  const auto start = std::chrono::steady_clock::now();
  std::string last;
  int errors = 0;
  for (;;) {
    if (job.state() == "succeeded" || job.state() == "failed") break;
    if (f.timeout > 0 &&
        std::chrono::steady_clock::now() - start > std::chrono::duration<double>(f.timeout)) {
      std::cerr << "shoalctl preheat: job " << job.id() << " still " << job.state() << " after "
                << f.timeout << " s (it goes on; check again with a longer --timeout)\n";
      return ctl::exit_failure;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_in(5));
    v1::GetPreheatRequest g;
    g.set_id(job.id());
    v1::PreheatJob next;
    auto st = stub->GetPreheat(&ctx, g, &next);
    if (!st.ok()) {
      if (st.error_code() == grpc::StatusCode::NOT_FOUND || ++errors >= 20) {
        std::cerr << "shoalctl preheat: job " << job.id() << ": " << st.error_message() << "\n";
        return ctl::exit_failure;
      }
      continue;
    }
    errors = 0;
    job = std::move(next);
    if (auto line = progress_line(job); !f.quiet && line != last) {
      std::cerr << line << "\n";
      last = line;
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (job.state() == "failed") {
    std::cerr << "shoalctl preheat: " << job.reference() << " failed: " << job.error() << "\n";
    return ctl::exit_failure;
  }
  std::cout << "preheat " << job.id() << " succeeded: " << job.reference() << " ("
            << job.blobs_total() << " blobs, " << format_bytes(job.bytes_total()) << ") on "
            << job.seeds_size() << " seed host(s) in " << static_cast<int>(secs * 10) / 10.0
            << " s\n";
  return ctl::exit_ok;
}

shoal::ctl::registration reg{"preheat", [](CLI::App& app, shoal::ctl::runner& run) {
  auto f = std::make_shared<preheat_flags>();
  auto* sub = app.add_subcommand(
      "preheat", "Have every seed host fetch every blob of a model now, and follow the job");
  sub->add_option("REF", f->ref, "The model: registry[:port]/repository:tag or @sha256:...")
      ->required();
  sub->add_option("--scheduler", f->scheduler, "shoal-scheduler gRPC address")
      ->capture_default_str();
  sub->add_option("--username", f->username,
                  "Registry user for the seeds (default: $SHOAL_REGISTRY_USERNAME)");
  sub->add_option("--password", f->password,
                  "Registry password (default: $SHOAL_REGISTRY_PASSWORD; prefer --password-stdin)");
  sub->add_flag("--password-stdin", f->password_stdin, "Read the password from standard input");
  sub->add_flag("--no-wait", f->no_wait, "Print the job id and return at once");
  sub->add_option("--timeout", f->timeout, "Give up following after this many seconds (0 = never)")
      ->capture_default_str();
  sub->add_flag("-q,--quiet", f->quiet, "No progress lines");
  run = [f] { return run_preheat(*f); };
}};

}  // namespace
