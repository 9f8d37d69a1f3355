#include "daemon/transfer/file_fetch.h"

// GCC 12 reports -Wmismatched-new-delete on every Asio awaitable frame: a known
// false positive (the frame's class-specific operator new/delete do match).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "daemon/source/upstream_policy.h"
#include "daemon/source/url_task.h"

namespace shoal::transfer {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {
auto log() {
  static auto l = logger("files");
  return l;
}
constexpr std::size_t kCopyStep = 64 << 20;
}  // namespace

asio::awaitable<result<file_result>> fetch_file(task_manager& tm, source::registry_client& origin,
                                                file_request req) {
  auto id = source::url_task_id(req.url, req.tag);
  if (!id) co_return std::move(id).error();
  if (!req.output.is_absolute())
    co_return error(errc::invalid_argument, "output path " + req.output.string() + " is not absolute");
  if (!req.digest.empty() && !parse_digest(req.digest))
    co_return error(errc::invalid_argument, "--digest " + req.digest + ": " + parse_digest(req.digest).error().message);
  auto where = source::parse_url(req.url);
  if (!where) co_return std::move(where).error();
  source::request_target target;
  target.registry = where->authority();
  target.repository = "";
  target.authorization = req.authorization;
  target.url = req.url;
  target.content_digest = req.digest;
  const std::string what = "file " + where->str();
  auto task_digest = *parse_digest("sha256:" + *id);

  // The size (and a check the URL is there and allowed).
  auto head = co_await origin.head_blob(target, task_digest.str());
  if (!head) co_return std::move(head).error();
  if (head->status != 200)
    co_return error(head->status == 404 ? errc::not_found
                    : head->status == 401 || head->status == 403 ? errc::unauthorized
                                                                 : errc::upstream_error,
                    what + ": HEAD answered " + std::to_string(head->status) +
                        (head->status == 403 ? " (a signed URL valid only for GET is not supported yet)" : ""));
  if (!head->content_length)
    co_return error(errc::unsupported, what + ": the server sends no Content-Length, so the file cannot be "
                                              "split into pieces (fetch it directly)");
  file_result out;
  out.task_id = *id;
  out.size = *head->content_length;
  auto t = tm.acquire(task_digest, out.size, target, &out.cache_hit);
  if (!t) co_return std::move(t).error();
  std::shared_ptr<task> tk = *t;
  // Wait for the whole file: the last piece becomes readable only after the
  // download ended (and, with a digest, was verified).
  if (tk->piece_count() > 0) {
    if (auto r = co_await tk->wait_piece(tk->piece_count() - 1); !r) co_return std::move(r).error();
  }
  while (tk->current() == task::state::downloading)
    co_await tk->wait_change(std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
  if (tk->current() != task::state::complete) {
    auto r = co_await tk->wait_piece(0);
    co_return r ? error(errc::upstream_error, what + ": download failed") : std::move(r).error();
  }

  // Into place: a hard link from the cache (same file system), else a copy;
  // written aside and renamed, so the output is whole or absent.
  std::error_code ec;
  fs::create_directories(req.output.parent_path(), ec);
  const fs::path tmp = req.output.string() + ".shoal-tmp";
  fs::remove(tmp, ec);
  const std::string proc = "/proc/self/fd/" + std::to_string(tk->fd());
  if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0) {
    out.linked = true;
  } else {
    const int dst = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (dst < 0)
      co_return error(errc::io, "cannot create " + tmp.string() + ": " + std::strerror(errno));
    loff_t in_off = 0;
    while (static_cast<std::uint64_t>(in_off) < out.size) {
      const ssize_t n = ::copy_file_range(tk->fd(), &in_off, dst, nullptr,
                                          std::min<std::uint64_t>(kCopyStep, out.size - in_off), 0);
      if (n <= 0) {
        const int e = n < 0 ? errno : EIO;
        ::close(dst);
        fs::remove(tmp, ec);
        co_return error(errc::io, "copying " + what + " to " + tmp.string() + ": " + std::strerror(e));
      }
      // Let other work run between steps of a long copy.
      co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    }
    if (::fsync(dst) != 0 || ::close(dst) != 0)
      co_return error(errc::io, "writing " + tmp.string() + ": " + std::strerror(errno));
  }
  fs::rename(tmp, req.output, ec);
  if (ec) {
    fs::remove(tmp, ec);
    co_return error(errc::io, "renaming " + tmp.string() + " to " + req.output.string() + ": " + ec.message());
  }
  log()->info("{}: {} bytes to {} (task {}, {}{})", what, out.size, req.output.string(),
              out.task_id.substr(0, 12), out.cache_hit ? "from the cache" : "downloaded",
              out.linked ? ", hard-linked" : ", copied");
  co_return out;
}

}  // namespace shoal::transfer
