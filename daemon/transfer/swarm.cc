#include "daemon/transfer/swarm.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>

#include "common/http.h"
#include "common/log.h"
#include "common/piece.h"
#include "common/sha256.h"
#include "common/units.h"
#include "daemon/transfer/piece_list.h"

namespace shoal::transfer {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::awaitable;
using asio::use_awaitable;
using clock = std::chrono::steady_clock;

namespace {
auto log() { return logger("swarm"); }

struct peer_reply {
  unsigned status = 0;
  std::string body;                      // any reply but a whole piece
  std::shared_ptr<partial_piece> piece;  // a 200 whose Content-Length is `piece_size`
  std::string version;                   // X-Shoal-Bitmap-Version
  std::string uploads;                   // X-Shoal-Uploads
  std::string receiving;                 // X-Shoal-Receiving
};

// How a piece GET went, beyond its result.
struct peer_get_info {
  bool timed_out = false;  // a slow parent, not one that cannot be reached
  bool relayed = false;    // the parent relayed a piece it was receiving (X-Shoal-Relay)
};

// A connection to a parent, kept open between requests when `keep` (the
// /bitmap long-poll asks again as soon as it is answered: a new TCP
// connection each time cost both sides a connect and a close per answer).
struct peer_conn {
  explicit peer_conn(asio::any_io_executor ex, bool keep = false) : stream(ex), keep(keep) {}
  beast::tcp_stream stream;
  bool keep;
  std::string addr;  // where `stream` is connected, if open
  bool open = false;
  void close() {
    boost::system::error_code ignore;
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignore);
    stream.socket().close(ignore);
    open = false;
  }
};

// One GET to a parent's piece server over `conn` (connected first unless it
// is open to `addr`; a kept connection the parent closed meanwhile is
// replaced once). With `piece_size` set, a 200 of exactly that length is read
// straight from the socket into one buffer with large reads (not through
// Beast's body parser: socket -> parser buffer -> string, 64 KiB at a time),
// handed to `on_body` before its first byte so that this daemon can relay it
// as it arrives (partial_piece.h); anything else, up to `limit` bytes, into
// `body`.
awaitable<result<peer_reply>> peer_get(
    peer_conn& conn, std::string addr, std::string target, std::size_t limit,
    std::chrono::seconds timeout, peer_get_info* info, std::size_t piece_size = 0,
    std::function<void(const std::shared_ptr<partial_piece>&)> on_body = nullptr) {
  *info = {};
  bool* timed_out = &info->timed_out;
  auto ep = http::parse_endpoint(addr);
  if (!ep) co_return error(errc::invalid_argument, "parent address '" + addr + "' is invalid");
  if (conn.open && conn.addr != addr) conn.close();
  auto& stream = conn.stream;
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
  req.set(bhttp::field::host, addr);
  req.set(bhttp::field::user_agent, "shoald");
  req.keep_alive(conn.keep);
  beast::flat_buffer buf;
  // Not assignable: a new one for the second attempt.
  std::optional<bhttp::response_parser<bhttp::string_body>> parser;
  parser.emplace();
  parser->body_limit(limit);
  auto failed = [&](boost::system::error_code ec) {
    *timed_out = ec == beast::error::timeout;
    conn.close();
    return error(errc::network, "reading " + target + " from parent " + addr + ": " + ec.message());
  };
  for (int attempt = 0;; ++attempt) {
    const bool reused = conn.open;
    if (!conn.open) {
      stream.expires_after(std::chrono::seconds(5));
      auto [cec] = co_await stream.async_connect(*ep, asio::as_tuple(use_awaitable));
      if (cec) {
        *timed_out = cec == beast::error::timeout;
        conn.close();
        co_return error(errc::network, "connect to parent " + addr + ": " + cec.message());
      }
      conn.open = true;
      conn.addr = addr;
    }
    stream.expires_after(timeout);
    auto [wec, wn] = co_await bhttp::async_write(stream, req, asio::as_tuple(use_awaitable));
    boost::system::error_code hec = wec;
    if (!wec) {
      auto [rec, rn] =
          co_await bhttp::async_read_header(stream, buf, *parser, asio::as_tuple(use_awaitable));
      hec = rec;
    }
    if (!hec) break;
    // A kept connection the parent closed while idle: once more on a new one.
    if (reused && attempt == 0 && hec != beast::error::timeout) {
      conn.close();
      buf.clear();
      parser.emplace();
      parser->body_limit(limit);
      continue;
    }
    co_return failed(hec);
  }
  peer_reply out;
  out.status = parser->get().result_int();
  out.version = std::string(parser->get()["X-Shoal-Bitmap-Version"]);
  out.uploads = std::string(parser->get()["X-Shoal-Uploads"]);
  out.receiving = std::string(parser->get()["X-Shoal-Receiving"]);
  info->relayed = parser->get()["X-Shoal-Relay"] == "1";
  if (piece_size > 0 && out.status == 200 && parser->content_length() == piece_size &&
      !parser->chunked()) {
    auto body = std::make_shared<partial_piece>(stream.get_executor(), piece_size,
                                                partial_piece::where::memory);
    if (on_body) on_body(body);
    const std::size_t have = std::min(buf.size(), piece_size);
    asio::buffer_copy(asio::buffer(body->data(), have), buf.data());
    buf.consume(have);
    body->advance(have);
    // Each read takes whatever the socket holds, and is relayed at once.
    while (!body->whole()) {
      const auto at = static_cast<std::size_t>(body->received());
      auto [bec, bn] = co_await stream.async_read_some(
          asio::buffer(body->data() + at, piece_size - at), asio::as_tuple(use_awaitable));
      if (bec) co_return failed(bec);
      body->advance(bn);
    }
    out.piece = std::move(body);
  } else {
    auto [rec, rn] =
        co_await bhttp::async_read(stream, buf, *parser, asio::as_tuple(use_awaitable));
    if (rec) co_return failed(rec);
    out.body = std::move(parser->get().body());
  }
  if (!conn.keep || !parser->get().keep_alive() || buf.size() > 0) conn.close();
  co_return out;
}

struct checked_piece {
  std::string sha256;
  std::optional<result<void>> written;  // tried only on a match
};

// On the blocking pool: hashes a piece from a parent and, when it matches
// `expect` (the scheduler's digest, if known yet), writes it at `offset` --
// off the I/O thread, which receives the next pieces meanwhile. The piece is
// whole: nothing writes to its buffer any more (relays only read it).
awaitable<checked_piece> check_and_write(std::shared_ptr<const partial_piece> data,
                                         std::shared_ptr<storage::task_handle> h,
                                         std::uint64_t offset, std::string expect) {
  checked_piece out;
  out.sha256 = sha256_hex(std::string_view(data->data(), data->size()));
  if (!expect.empty() && out.sha256 == expect) out.written = h->write(offset, data->bytes());
  co_return out;
}

// Feeds bytes [begin, end) of the content file into `whole` (on the blocking pool).
awaitable<result<void>> hash_range(std::shared_ptr<storage::task_handle> h, sha256* whole,
                                   std::uint64_t begin, std::uint64_t end) {
  std::vector<char> buf(4 << 20);
  std::uint64_t off = begin;
  while (off < end) {
    auto got = h->read(off, std::span<char>(buf.data(), std::min<std::uint64_t>(buf.size(), end - off)));
    if (!got) co_return std::move(got).error();
    if (*got == 0) co_return error(errc::io, "short read from " + h->path().string());
    whole->update(std::span<const char>(buf.data(), *got));
    off += *got;
  }
  co_return ok();
}

awaitable<void> sleep_for(asio::any_io_executor ex, clock::duration d) {
  asio::steady_timer t(ex, d);
  auto [ec] = co_await t.async_wait(asio::as_tuple(use_awaitable));
  (void)ec;
}

const char* reason_name(v1::PieceFailed::Reason r) {
  switch (r) {
    case v1::PieceFailed::DIGEST_MISMATCH: return "digest_mismatch";
    case v1::PieceFailed::UNAVAILABLE: return "unavailable";
    case v1::PieceFailed::CONNECT: return "connect";
    case v1::PieceFailed::TIMEOUT: return "timeout";
    default: return "reason_unspecified";
  }
}
}  // namespace

swarm_metrics::swarm_metrics(metrics::registry& r)
    : peer_bytes(r.add_counter("shoal_peer_bytes_total",
                               "Piece bytes downloaded from parents (verified), by parent host id",
                               {"parent"})),
      piece_failures(r.add_counter("shoal_piece_failures_total",
                                   "Piece downloads from parents that failed, by reason",
                                   {"reason"})),
      fetch_seconds(piece_fetch_seconds(r).with({"peer"})),
      bytes(bytes_by_source(r).with({"peer"})),
      failures(failures_by_kind(r)),
      blob_verifications(r.add_counter(
          "shoal_blob_verifications_total",
          "Swarm downloads whose whole blob was verified, by how: hashed (SHA-256 of the "
          "content) or sealed_list (every piece matched a sealed digest list)",
          {"how"})),
      blob_hash_bytes(r.add_counter("shoal_blob_hash_bytes_total",
                                    "Bytes fed to whole-blob SHA-256 checks of swarm downloads "
                                    "(besides the per-piece checks)")
                          .with()) {}

// One task's swarm download (and afterwards its presence as a parent).
class swarm_session : public std::enable_shared_from_this<swarm_session> {
 public:
  swarm_session(swarm& s, std::shared_ptr<task> t, source::request_target origin)
      : s_(s),
        tm_(s.tm_),
        t_(std::move(t)),
        origin_(std::move(origin)),
        ex_(tm_.executor()),
        count_(t_->piece_count()),
        have_(count_, false),
        digests_(count_),
        in_flight_(count_, 0),
        reported_(count_, false) {
    for (std::uint32_t i = 0; i < count_; ++i) {
      if (t_->handle_->piece_finished(i)) {
        have_[i] = true;
        digests_[i] = t_->handle_->piece_digest(i);
        whole_hash_needed_ = true;  // bytes from disk: only the whole-blob hash checks them
      }
    }
    rng_.seed(std::random_device{}());
  }

  const std::string& id() const { return t_->digest_.hex; }

  void begin() {
    auto self = shared_from_this();
    t_->on_durable_ = [w = weak_from_this()](const pending_piece& p) {
      if (auto s = w.lock()) s->on_durable(p);
    };
    t_->on_reader_wait_ = [w = weak_from_this()] {
      if (auto s = w.lock()) s->pump();
    };
    idx_ = s_.sched_.pick(id());
    log()->info("task {}: joining the swarm via scheduler {} ({} of {} pieces cached)",
                short_id(), s_.sched_.address(idx_), count_held(), count_);
    asio::co_spawn(ex_, connect(self), asio::detached);
  }

  // Adds the parents this download may fetch from now (for shoal_peers_active).
  void parents_in_use(std::set<std::string>& out) const {
    if (!downloading()) return;
    const auto now = clock::now();
    for (const auto& [id, p] : parents_)
      if (p.usable(now) && !blocked_.contains(id)) out.insert(id);
  }

  // Shutdown or replacement: end the stream, stop fetching.
  void end() {
    ended_ = true;
    ++work_gen_;
    ++origin_gen_;
    if (stream_) stream_->close();
    stream_.reset();
  }

 private:
  struct parent_state {
    std::string addr;
    std::vector<bool> has;
    // Pieces it is receiving (X-Shoal-Receiving): relayed to this child as
    // they arrive.
    std::vector<bool> recv;
    std::uint64_t version = 0;
    bool have_version = false;
    std::size_t in_flight = 0;
    bool active = false;
    bool polling = false;
    bool source = false;  // the task's source peer (still reading origin)
    // A parent left out of the scheduler's latest set stays usable this long
    // (unless it fails): the set can change every second as upload load
    // shifts, and pieces already flowing from it should not stop.
    clock::time_point grace_until{};
    bool usable(clock::time_point now) const { return active || now < grace_until; }
    clock::time_point busy_until{};
    // Its uplink's load as of its latest bitmap (see parent_upload_load).
    std::size_t uploads = 0;      // X-Shoal-Uploads
    std::size_t asked_since = 0;  // requests this child sent it since
    clock::time_point uploads_at{};
    // Pieces this parent declined to send (409: a source's first copy went
    // elsewhere), until when.
    std::map<std::uint32_t, clock::time_point> declined;
    // Holds piece n, or relays it as it arrives.
    bool offers(std::uint32_t n) const {
      return n < has.size() && (has[n] || (n < recv.size() && recv[n]));
    }
    bool declines(std::uint32_t n, clock::time_point now) {
      auto it = declined.find(n);
      if (it == declined.end()) return false;
      if (now < it->second) return true;
      declined.erase(it);
      return false;
    }
  };

  std::string short_id() const { return id().substr(0, 12); }
  std::uint32_t tail() const { return count_ - 1; }
  std::uint32_t count_held() const {
    return static_cast<std::uint32_t>(std::count(have_.begin(), have_.end(), true));
  }
  bool downloading() const {
    return !ended_ && !fell_back_ && t_->state_ == task::state::downloading;
  }
  swarm_metrics& m() { return s_.metrics_; }

  // ---- stream -----------------------------------------------------------

  static awaitable<void> connect(std::shared_ptr<swarm_session> self) {
    bool ok = co_await self->s_.sched_.announce(self->idx_);
    if (self->ended_ || self->fell_back_) co_return;
    if (!ok) {
      self->on_unreachable("scheduler " + self->s_.sched_.address(self->idx_) +
                           " did not answer AnnounceHost");
      co_return;
    }
    if (self->ever_decided_ && !(self->is_source_ && !self->done_)) {
      // Re-registering after losing the scheduler: let the source come first.
      auto later = sleep_for(self->ex_, self->s_.opts_.reregister_delay);
      co_await std::move(later);
      if (self->ended_ || self->fell_back_) co_return;
    }
    const auto gen = ++self->stream_gen_;
    std::weak_ptr<swarm_session> w = self;
    self->stream_ = self->s_.sched_.open(
        self->idx_,
        [w, gen](v1::Decision d) {
          if (auto s = w.lock(); s && s->stream_gen_ == gen) s->on_decision(std::move(d));
        },
        [w, gen](grpc::Status st) {
          if (auto s = w.lock(); s && s->stream_gen_ == gen) s->on_end(st);
        });
    v1::PeerEvent ev;
    auto* r = ev.mutable_register_();
    r->set_host_id(self->s_.opts_.host_id);
    r->set_task_id(self->id());
    r->set_content_length(self->t_->content_length());
    r->set_piece_length(self->t_->piece_length());
    auto* o = r->mutable_origin();
    o->set_registry(self->origin_.registry);
    o->set_repository(self->origin_.repository);
    o->set_digest(self->t_->digest_.str());
    o->set_url(self->origin_.url);
    r->set_finished_bitmap(self->t_->bitmap());
    for (std::uint32_t i = 0; i < self->count_; ++i) {
      if (self->digests_[i].empty()) continue;
      auto* kd = r->add_known_digests();
      kd->set_index(i);
      kd->set_sha256(self->digests_[i]);
    }
    r->set_has_client(true);
    r->set_was_source(self->is_source_ && !self->done_);
    self->stream_->send(std::move(ev));
    if (self->done_) {
      v1::PeerEvent done;
      done.mutable_done();
      self->stream_->send(std::move(done));
    }
  }

  void send(v1::PeerEvent ev) {
    if (stream_) stream_->send(std::move(ev));
  }

  // The scheduler cannot be reached. Before any decision: origin as before
  // (unless --no-back-to-source); mid-transfer: keep going, retry.
  void on_unreachable(const std::string& why) {
    if (ended_ || fell_back_) return;
    m().failures.with({"scheduler"}).inc();
    if (!ever_decided_ && !done_) {
      if (s_.opts_.back_to_source) {
        log()->warn("task {}: {}; downloading from origin without the swarm", short_id(), why);
        fallback_origin();
      } else {
        fail(error(errc::network, "blob " + t_->digest_.str() + ": " + why +
                                      " and --no-back-to-source forbids reading the registry "
                                      "(start the scheduler or drop the flag)"));
      }
      return;
    }
    ++reconnect_failures_;
    if (downloading() && reconnect_failures_ >= 30 && s_.opts_.back_to_source) {
      log()->warn("task {}: {} for 30 s; finishing from origin", short_id(), why);
      fallback_origin();
      return;
    }
    schedule_reconnect();
  }

  void schedule_reconnect() {
    if (reconnecting_ || ended_ || fell_back_) return;
    reconnecting_ = true;
    asio::co_spawn(ex_, reconnect(shared_from_this()), asio::detached);
  }
  static awaitable<void> reconnect(std::shared_ptr<swarm_session> self) {
    // The source retries sooner: it should be back first (see reregister_delay).
    const bool source = self->is_source_ && !self->done_;
    auto pause = sleep_for(self->ex_, source ? std::chrono::milliseconds(250)
                                             : std::chrono::milliseconds(1000));
    co_await std::move(pause);
    self->reconnecting_ = false;
    if (self->ended_ || self->fell_back_) co_return;
    auto again = connect(self);
    co_await std::move(again);
  }

  void on_end(const grpc::Status& st) {
    stream_.reset();
    if (ended_ || fell_back_) return;
    if (!ever_decided_ && !st.ok()) {
      on_unreachable("scheduler " + s_.sched_.address(idx_) + ": " + st.error_message());
      return;
    }
    log()->info("task {}: scheduler stream ended ({}); re-registering", short_id(),
                st.ok() ? "ok" : st.error_message());
    if (!st.ok()) {
      ++reconnect_failures_;
      m().failures.with({"scheduler"}).inc();
    }
    schedule_reconnect();
  }

  void on_decision(v1::Decision d) {
    ever_decided_ = true;
    reconnect_failures_ = 0;
    switch (d.decision_case()) {
      case v1::Decision::kDigests: {
        const bool sealed = d.digests().sealed();
        for (const auto& pd : d.digests().digests()) {
          if (pd.index() >= count_) continue;
          auto& mine = digests_[pd.index()];
          if (mine.empty()) {
            mine = pd.sha256();
          } else if (mine != pd.sha256()) {
            // A piece was (or will be) checked against another digest than
            // the list's: only the whole-blob hash can tell.
            whole_hash_needed_ = true;
          }
        }
        if (sealed && !sealed_) {
          sealed_ = true;
          log()->debug("task {}: the scheduler's digest list is sealed", short_id());
        }
        accept_parked();
        pump();
        check_complete();
        break;
      }
      case v1::Decision::kFromOrigin: {
        if (done_ || !downloading()) break;
        is_source_ = true;
        t_->set_first_copy_only(true);
        origin_list_.clear();
        for (auto p : d.from_origin().pieces())
          if (p < count_) origin_list_.insert(p);
        log()->info("task {}: elected source: {} pieces from origin", short_id(),
                    origin_list_.size());
        start_origin();
        pump();
        break;
      }
      case v1::Decision::kStopFromOrigin:
        log()->info("task {}: stop reading origin: {}", short_id(), d.stop_from_origin().message());
        ++origin_gen_;
        is_source_ = false;
        t_->set_first_copy_only(false);
        origin_list_.clear();
        origin_queue_.clear();
        pump();
        break;
      case v1::Decision::kParents: {
        const auto now = clock::now();
        for (auto& [id, p] : parents_) {
          if (p.active) p.grace_until = now + std::chrono::seconds(5);
          p.active = false;
        }
        for (const auto& p : d.parents().parents()) {
          if (p.host_id() == s_.opts_.host_id || blocked_.contains(p.host_id())) continue;
          auto& ps = parents_[p.host_id()];
          ps.addr = p.addr();
          ps.active = true;
          ps.source = p.source();
          if (!ps.have_version) {
            ps.has.assign(count_, false);
            ps.recv.assign(count_, false);
            const auto& bm = p.finished_bitmap();
            for (std::uint32_t i = 0; i < count_ && i / 8 < bm.size(); ++i)
              ps.has[i] = (static_cast<unsigned char>(bm[i / 8]) >> (i % 8)) & 1u;
          }
          if (!ps.polling && downloading()) {
            ps.polling = true;
            asio::co_spawn(ex_, poll(shared_from_this(), p.host_id(), work_gen_), asio::detached);
          }
        }
        log()->debug("task {}: {} parents", short_id(), d.parents().parents_size());
        pump();
        break;
      }
      case v1::Decision::kAbort:
        on_abort(d.abort());
        break;
      default:
        break;
    }
  }

  void on_abort(const v1::Abort& a) {
    log()->warn("task {}: scheduler aborted ({}): {}", short_id(),
                v1::Abort::Reason_Name(a.reason()), a.message());
    switch (a.reason()) {
      case v1::Abort::POISONED: {
        // Every copy is dropped; the next request starts the task over.
        error e(errc::digest_mismatch, "blob " + t_->digest_.str() +
                                           " was poisoned: the source's copy did not match the "
                                           "digest; retry the pull to start over");
        auto self = shared_from_this();
        fail(e);
        if (auto r = t_->handle_->discard(); !r)
          log()->warn("task {}: discard: {}", short_id(), r.error().describe());
        break;
      }
      case v1::Abort::SHUTDOWN:
      case v1::Abort::HOST_GONE:
        break;  // the stream ends next; on_end re-registers (announcing first)
      default:
        if (done_) break;
        if (s_.opts_.back_to_source) {
          fallback_origin();
        } else {
          fail(error(errc::upstream_error, "blob " + t_->digest_.str() + ": scheduler aborted (" +
                                               v1::Abort::Reason_Name(a.reason()) + ": " +
                                               a.message() + ") and --no-back-to-source is set"));
        }
    }
  }

  void fail(error e) {
    log()->error("task {}: {}", short_id(), e.message);
    v1::PeerEvent ev;
    ev.mutable_failed()->set_message(e.message);
    send(std::move(ev));
    if (stream_) stream_->close_after_writes();
    stream_.reset();
    ended_ = true;
    ++work_gen_;
    ++origin_gen_;
    tm_.finish(t_, std::move(e));
    forget();
  }

  void forget() {
    auto it = s_.sessions_.find(id());
    if (it != s_.sessions_.end() && it->second.get() == this) s_.sessions_.erase(it);
  }

  void fallback_origin() {
    fell_back_ = true;
    ++work_gen_;
    ++origin_gen_;
    if (stream_) stream_->close();
    stream_.reset();
    t_->on_reader_wait_ = nullptr;
    t_->on_durable_ = nullptr;
    asio::co_spawn(ex_, tm_.download(t_, origin_), asio::detached);
    forget();
  }

  // ---- origin (source peer) --------------------------------------------

  void start_origin() {
    ++origin_gen_;
    origin_queue_.clear();
    std::vector<std::uint32_t> missing;
    for (auto n : origin_list_)
      if (!have_[n]) missing.push_back(n);
    for (std::size_t i = 0; i < missing.size();) {
      std::size_t j = i;
      while (j + 1 < missing.size() && missing[j + 1] == missing[j] + 1 &&
             j + 1 - i < s_.opts_.origin_run_pieces)
        ++j;
      origin_queue_.push_back({missing[i], missing[j]});
      i = j + 1;
    }
    const std::size_t workers = std::min(s_.opts_.origin_streams, origin_queue_.size());
    for (std::size_t i = 0; i < workers; ++i)
      asio::co_spawn(ex_, origin_worker(shared_from_this(), origin_gen_), asio::detached);
  }

  static awaitable<void> origin_worker(std::shared_ptr<swarm_session> self, std::uint64_t gen) {
    auto cancelled = [self, gen] { return self->origin_gen_ != gen || !self->downloading(); };
    while (!cancelled() && !self->origin_queue_.empty()) {
      auto [first, last] = self->origin_queue_.front();
      self->origin_queue_.pop_front();
      // Skip pieces that arrived meanwhile at the edges of the run.
      while (first <= last && self->have_[first]) ++first;
      while (last > first && self->have_[last]) --last;
      if (first > last) continue;
      while (!cancelled() && self->lead_capped())
        co_await sleep_for(self->ex_, std::chrono::milliseconds(10));
      if (cancelled()) break;
      // Named, not temporaries in the co_await expression (GCC 12 mishandles
      // lambda temporaries there: the captured shared_ptr was released twice).
      std::function<bool()> cancel_fn = cancelled;
      std::function<void(std::uint32_t)> on_piece = [self](std::uint32_t n) {
        self->on_piece_written(n, {}, {});
      };
      auto t = self->t_;
      auto origin = self->origin_;
      auto r = co_await self->tm_.fetch_run(std::move(t), std::move(origin), first, last, nullptr,
                                            std::move(cancel_fn), std::move(on_piece));
      if (!r && !cancelled()) {
        self->tm_.metrics_.origin_failed();
        self->fail(error(r.error().code, r.error().message));
        co_return;
      }
    }
  }

  // Pieces read from origin that no other daemon has received yet: all that
  // is lost if this source dies. Capped while others are asking for pieces
  // (a source alone reads at full speed).
  bool lead_capped() const {
    const auto cap = s_.opts_.source_lead;
    if (cap == 0 || clock::now() - t_->last_piece_request() > std::chrono::seconds(1)) return false;
    std::uint32_t lead = 0;
    for (std::uint32_t n = 0; n < count_; ++n)
      if (from_origin_[n] && !t_->delivered(n) && ++lead >= cap) return true;
    return false;
  }

  // A piece is written (from origin, or from a parent and verified).
  void on_piece_written(std::uint32_t n, std::string sha, std::string parent) {
    log()->trace("task {}: piece {} written (had {}, from '{}') session {}", short_id(), n,
                 bool(have_[n]), parent, static_cast<void*>(this));
    if (have_[n]) return;
    have_[n] = true;
    if (parent.empty()) {
      whole_hash_needed_ = true;
      from_origin_[n] = true;
    }
    pending_piece p{n, std::move(sha), std::move(parent)};
    if (n == tail()) {
      tail_pending_ = std::move(p);  // readable and recorded only once the blob verifies
      // Relayed from the file until then: its buffer need not stay in memory
      // for the rest of the download (a whole piece more of B's peak RSS in
      // the 4 GiB p2p benchmark).
      t_->receiving_written(n);
    } else if (p.sha256.empty()) {
      // From origin: hash it now and report its digest at once. Reported
      // after the group commit (up to commit_interval later), children could
      // not verify, and so not pass on, the newest pieces for that long, and
      // the few they may hold unverified filled their request slots.
      t_->set_readable(n);
      ++origin_hashing_;
      asio::co_spawn(ex_, hash_origin_piece(shared_from_this(), n), asio::detached);
    } else {
      t_->set_readable(n);
      report(p);  // verified against the scheduler's digest: others may count on it now
      tm_.commit(t_, std::move(p));
    }
    check_complete();
  }

  static awaitable<void> hash_origin_piece(std::shared_ptr<swarm_session> self, std::uint32_t n) {
    const auto pl = self->t_->piece_length();
    const std::uint64_t off = piece_offset(n, pl);
    const std::uint64_t end = off + piece_size(n, self->t_->content_length(), pl);
    auto h = std::make_shared<sha256>();
    auto work = hash_range(self->t_->handle_, h.get(), off, end);
    auto r = co_await asio::co_spawn(self->tm_.blocking_.get_executor(), std::move(work),
                                     use_awaitable);
    --self->origin_hashing_;
    pending_piece p{n, r ? h->finish_hex() : std::string(), {}};
    if (!p.sha256.empty() && self->downloading()) self->report(p);
    self->tm_.commit(self->t_, std::move(p));  // empty digest: the commit hashes it
    self->check_complete();
  }

  // PieceFinished: the piece is written and its digest known (durability is
  // the local cache's business: after a crash a daemon registers again with
  // what it recorded).
  void report(const pending_piece& p) {
    if (p.index >= count_ || reported_[p.index]) return;
    reported_[p.index] = true;
    if (digests_[p.index].empty()) digests_[p.index] = p.sha256;
    v1::PeerEvent ev;
    auto* f = ev.mutable_piece_finished();
    f->set_index(p.index);
    f->set_sha256(p.sha256);
    f->set_parent_host_id(p.parent);
    send(std::move(ev));
  }

  void on_durable(const pending_piece& p) {
    log()->trace("task {}: piece {} durable session {}", short_id(), p.index,
                 static_cast<void*>(this));
    if (p.index < count_ && reported_[p.index]) return;
    if (p.index < count_) reported_[p.index] = true;
    if (p.index < count_ && digests_[p.index].empty()) digests_[p.index] = p.sha256;
    v1::PeerEvent ev;
    auto* f = ev.mutable_piece_finished();
    f->set_index(p.index);
    f->set_sha256(p.sha256);
    f->set_parent_host_id(p.parent);
    send(std::move(ev));
  }

  // The whole-blob SHA-256 is redundant when every piece came from a parent
  // and matched a sealed digest list: the scheduler seals a list only when a
  // copy that produced it hashed whole to the blob's digest (a source's
  // SourceFinished{verified}, or a peer's Done), so a copy whose pieces have,
  // piece for piece, the same SHA-256 values is that content (short of a
  // SHA-256 collision). It cannot be derived from piece digests (SHA-256 does
  // not compose), hence this argument. Pieces from origin or from disk, a
  // source, and a digest that differed from the list keep the hash.
  // Called for every piece written: the scan for unknown digests runs until
  // it first finds none (digests are never forgotten).
  bool list_verifies() {
    if (!sealed_ || whole_hash_needed_ || is_source_) return false;
    if (!all_digests_known_)
      all_digests_known_ = std::none_of(digests_.begin(), digests_.end(),
                                        [](const std::string& d) { return d.empty(); });
    return all_digests_known_ && !expected_content_hex(t_->digest_, origin_).empty();
  }

  // Nothing so far rules out list_verifies(): only the seal is missing.
  bool list_may_verify() const {
    return !sealed_ && !whole_hash_needed_ && !is_source_ &&
           !expected_content_hex(t_->digest_, origin_).empty();
  }

  void check_complete() {
    advance_hash();
    if (verifying_ || !downloading() || count_held() < count_ || origin_hashing_ > 0) return;
    if (hashed_ < count_ && !list_verifies()) return;
    verifying_ = true;
    asio::co_spawn(ex_, verify(shared_from_this()), asio::detached);
  }

  static awaitable<void> verify(std::shared_ptr<swarm_session> self) {
    auto& tm = self->tm_;
    auto t = self->t_;
    const auto want = expected_content_hex(t->digest_, self->origin_);
    // Every piece was fed to whole_ in order as the held prefix grew, or
    // matched the sealed list.
    const bool by_list = self->list_verifies();
    auto got = std::optional<std::string>(by_list ? want : self->whole_->finish_hex());
    self->m().blob_verifications.with({by_list ? "sealed_list" : "hashed"}).inc();
    const bool verified = want.empty() || *got == want;
    if (!verified) {
      tm.metrics_.blob_mismatch();
      if (self->is_source_) {
        v1::PeerEvent ev;
        ev.mutable_source_finished()->set_sha256(*got);
        ev.mutable_source_finished()->set_verified(false);
        self->send(std::move(ev));
      }
      self->fail(error(errc::digest_mismatch,
                       "blob " + t->digest_.str() + " from " + self->origin_.registry + "/" +
                           self->origin_.repository + ": content hashes to sha256:" + *got +
                           " (nothing was cached)"));
      // At once (see task_manager::download): a later request re-creates it.
      if (auto r = t->handle_->discard(); !r) log()->warn("discard: {}", r.error().describe());
      co_return;
    }
    // The tail was held back until now: readers and children may have it.
    t->set_readable(self->tail());
    log()->debug("task {}: verified; session {} tail pending {} syncing {} unsynced {}",
                 self->short_id(), static_cast<void*>(self.get()),
                 self->tail_pending_.has_value(), t->syncing_, t->unsynced_.size());
    if (self->tail_pending_) {
      tm.commit(t, *self->tail_pending_);
      self->tail_pending_.reset();
    }
    if (auto r = co_await tm.drain(t); !r) {
      if (self->downloading()) self->fail(std::move(r).error());
      co_return;
    }
    log()->debug("task {}: drained; syncing {} unsynced {}", self->short_id(), t->syncing_,
                 t->unsynced_.size());
    if (!self->downloading()) co_return;
    if (auto r = t->handle_->mark_complete(); !r) {
      std::string missing;
      for (std::uint32_t i = 0; i < self->count_; ++i)
        if (!t->handle_->piece_finished(i)) missing += " " + std::to_string(i);
      log()->error("task {}: not recorded:{} syncing={} unsynced={}", self->short_id(), missing,
                   t->syncing_, t->unsynced_.size());
      self->fail(std::move(r).error());
      co_return;
    }
    if (self->is_source_) {
      v1::PeerEvent ev;
      ev.mutable_source_finished()->set_sha256(*got);
      ev.mutable_source_finished()->set_verified(true);
      self->send(std::move(ev));
    }
    v1::PeerEvent done;
    done.mutable_done();
    self->send(std::move(done));
    self->done_ = true;
    ++self->work_gen_;
    log()->info("task {}: complete, digest verified ({} from parents, source={})",
                self->short_id(), format_bytes(self->peer_bytes_), self->is_source_);
    tm.finish(t, std::nullopt);
  }

  // ---- whole-blob digest -------------------------------------------------
  // The blob's SHA-256 is computed as the held prefix grows (pieces arrive
  // roughly in order: reader bias, rarest = newest at the source), not in one
  // pass after the last piece: that pass put 0.3 s per 512 MiB, several
  // seconds with 16 daemons sharing 2 cores, between the last piece and the
  // client's last byte, and kept the last piece from being served to peers.
  void advance_hash() {
    if (hashing_ || hashed_ >= count_ || !have_[hashed_] || !downloading() || list_verifies())
      return;
    // A child whose pieces all came from parents is usually verified by the
    // sealed list: the source seals it when it finishes, before its children
    // do. Hashing the prefix meanwhile hashed every byte twice (per piece and
    // whole), 29% of shoald's CPU with 16 daemons on 2 cores (bench/swarm), so
    // the whole-blob hash waits for the last piece and stops when the seal
    // arrives.
    if (list_may_verify() && count_held() < count_) return;
    hashing_ = true;
    asio::co_spawn(ex_, hash_prefix(shared_from_this()), asio::detached);
  }

  static awaitable<void> hash_prefix(std::shared_ptr<swarm_session> self) {
    const auto pl = self->t_->piece_length();
    const auto len = self->t_->content_length();
    // At most ~16 MiB per job: a longer one holds a pool thread that the
    // pieces arriving meanwhile wait for (to be hashed and written).
    const std::uint32_t per_job =
        std::max<std::uint32_t>(1, static_cast<std::uint32_t>((16 << 20) / pl));
    while (self->downloading() && self->hashed_ < self->count_ && self->have_[self->hashed_] &&
           !self->list_verifies()) {
      std::uint32_t end = self->hashed_;
      while (end < self->count_ && self->have_[end] && end - self->hashed_ < per_job) ++end;
      const std::uint64_t b = piece_offset(self->hashed_, pl);
      const std::uint64_t e = end == self->count_ ? len : piece_offset(end, pl);
      auto work = hash_range(self->t_->handle_, self->whole_.get(), b, e);
      auto r = co_await asio::co_spawn(self->tm_.blocking_.get_executor(), std::move(work),
                                       use_awaitable);
      if (!self->downloading()) break;
      if (!r) {
        self->hashing_ = false;
        self->fail(std::move(r).error());
        co_return;
      }
      self->hashed_ = end;
      self->m().blob_hash_bytes.inc(static_cast<double>(e - b));
    }
    self->hashing_ = false;
    self->check_complete();
  }

  // ---- parents ------------------------------------------------------------

  static awaitable<void> poll(std::shared_ptr<swarm_session> self, std::string pid,
                              std::uint64_t gen) {
    auto alive = [&] {
      auto it = self->parents_.find(pid);
      return self->work_gen_ == gen && self->downloading() && it != self->parents_.end() &&
             it->second.usable(clock::now()) && !self->blocked_.contains(pid);
    };
    peer_conn conn(self->ex_, /*keep=*/true);
    while (alive()) {
      auto& ps = self->parents_[pid];
      std::string target = "/v1/tasks/" + self->id() + "/bitmap";
      if (ps.have_version) target += "?after=" + std::to_string(ps.version);
      peer_get_info info;
      std::string addr = ps.addr;
      auto r = co_await peer_get(conn, std::move(addr), std::move(target), self->count_ / 8 + 64,
                                 self->s_.opts_.bitmap_poll, &info);
      if (!alive()) break;
      auto& p = self->parents_[pid];
      if (!r || r->status != 200) {
        co_await sleep_for(self->ex_, std::chrono::milliseconds(500));
        continue;
      }
      p.has.assign(self->count_, false);
      for (std::uint32_t i = 0; i < self->count_ && i / 8 < r->body.size(); ++i)
        p.has[i] = (static_cast<unsigned char>(r->body[i / 8]) >> (i % 8)) & 1u;
      p.recv.assign(self->count_, false);
      if (auto recv = parse_piece_list(r->receiving, self->count_)) {
        for (auto n : *recv) p.recv[n] = !p.has[n];
      } else {
        log()->debug("task {}: parent {}: X-Shoal-Receiving ignored: {}", self->short_id(), pid,
                     recv.error().message);
      }
      std::uint64_t v = 0;
      std::from_chars(r->version.data(), r->version.data() + r->version.size(), v);
      p.version = v;
      p.have_version = true;
      std::size_t u = 0;
      std::from_chars(r->uploads.data(), r->uploads.data() + r->uploads.size(), u);
      p.uploads = u;
      p.asked_since = 0;
      p.uploads_at = clock::now();
      self->pump();
    }
    if (auto it = self->parents_.find(pid); it != self->parents_.end()) it->second.polling = false;
  }

  // Starts piece requests up to the limits: the piece a local reader waits
  // for first, then rarest first; in the endgame, a second copy of slow ones.
  void pump() {
    if (!downloading() || done_) return;
    // Pieces being received plus those waiting to be hashed and written are
    // all in memory: bounded, so a pool slower than the sockets slows the
    // requests rather than growing the heap (it grew to 1.1 GiB without this).
    while (fetch_slots_used(total_in_flight_, verifying_pieces_.size(), first_copies_) <
           s_.opts_.max_in_flight) {
      auto [pid, n] = choose();
      if (pid.empty()) break;
      auto& ps = parents_[pid];
      const bool first_copy = parent_last_resort(ps.source, holds_every_piece(ps));
      first_copies_ += first_copy;
      const bool sibling_relay = !first_copy && !(n < ps.has.size() && ps.has[n]);
      relays_in_flight_ += sibling_relay;
      ++ps.asked_since;
      ++ps.in_flight;
      ++total_in_flight_;
      ++in_flight_[n];
      fetching_[n].insert(pid);
      asio::co_spawn(ex_,
                     fetch(shared_from_this(), pid, ps.addr, n, first_copy, sibling_relay,
                           work_gen_),
                     asio::detached);
    }
  }

  // Pieces whose digest is still unknown are fetched too (verified when it
  // arrives), but only a few at a time: they wait in memory.
  bool needed(std::uint32_t n) const {
    return !have_[n] && !origin_list_.contains(n) && !parked_.contains(n) &&
           !verifying_pieces_.contains(n);
  }
  bool holds_every_piece(const parent_state& p) const {
    return p.has.size() == count_ &&
           std::all_of(p.has.begin(), p.has.end(), [](bool b) { return b; });
  }
  bool wanted(std::uint32_t n) const {
    if (!needed(n)) return false;
    // At most 2 parked: they hold memory beside the max_in_flight pieces
    // being received, hashed and written (B peaked at 153 MiB with 4 parked
    // 16 MiB pieces on the 4 GiB p2p run).
    return !digests_[n].empty() ||
           (parked_.size() < 2 &&
            parked_.size() + total_in_flight_ + verifying_pieces_.size() < s_.opts_.max_in_flight);
  }

  std::pair<std::string, std::uint32_t> choose() {
    const auto now = clock::now();
    std::size_t active = 0;
    for (auto& [id, p] : parents_) active += p.usable(now) && !blocked_.contains(id);
    // The source reading origin: only for pieces no other parent can give.
    std::set<std::string> last_resort;
    for (auto& [id, p] : parents_)
      if (parent_last_resort(p.source, holds_every_piece(p))) last_resort.insert(id);
    const std::size_t limit = requests_per_parent(active, s_.opts_.per_parent);
    auto usable = [&](const std::string& id, const parent_state& p) {
      return p.usable(now) && !blocked_.contains(id) && p.in_flight < limit &&
             p.busy_until <= now;
    };
    // Among parents holding n with a free slot, the first in holder_rank
    // order: not the source if possible, then the least loaded.
    auto holder = [&](std::uint32_t n, bool endgame) -> std::string {
      std::string best;
      std::optional<holder_rank> rank;
      for (auto& [id, p] : parents_) {
        if (!usable(id, p) || !p.offers(n) || p.declines(n, now)) continue;
        // Relayed by another child: only while few of this child's requests
        // are (sibling_relay_allowed).
        if (!p.has[n] && !last_resort.contains(id) &&
            !sibling_relay_allowed(relays_in_flight_, s_.opts_.max_sibling_relays))
          continue;
        if (endgame && fetching_[n].contains(id)) continue;
        holder_rank mine{last_resort.contains(id), !p.has[n], p.in_flight,
                         parent_upload_load(p.uploads, p.asked_since, now - p.uploads_at),
                         static_cast<std::uint32_t>(rng_())};
        if (!rank || mine < *rank) {
          rank = mine;
          best = id;
        }
      }
      return best;
    };
    // Reader bias: the piece a local reader waits for, and the next one.
    const auto r = t_->reader_next_;
    for (std::uint32_t n = r; n < count_ && n < r + 2; ++n) {
      if (!wanted(n) || in_flight_[n] > 0) continue;
      if (auto h = holder(n, false); !h.empty()) return {h, n};
    }
    // Rarest first; among the rarest, a random one, so children fetching
    // from the same parent at once rarely pick the same piece (what they
    // fetch is not visible to each other until they hold it).
    bool missing_idle = false;  // a wanted piece nobody is fetching
    {
      std::vector<std::pair<std::uint32_t, std::string>> rarest;
      std::size_t best_rarity = SIZE_MAX;
      for (std::uint32_t n = 0; n < count_; ++n) {
        if (!needed(n) || in_flight_[n] > 0) continue;
        // Counted before wanted(): a piece held back only because its digest
        // is unknown yet (not read from origin yet) still means this is not
        // the endgame. Otherwise a child that kept up with the source was in
        // "endgame" all along and fetched second copies of nearly every piece.
        missing_idle = true;
        if (!wanted(n)) continue;
        std::size_t rarity = 0;
        for (auto& [id, p] : parents_)
          if (p.usable(now) && !blocked_.contains(id) && p.offers(n)) ++rarity;
        if (rarity == 0 || rarity > best_rarity) continue;
        auto h = holder(n, false);
        if (h.empty()) continue;
        if (rarity < best_rarity) {
          best_rarity = rarity;
          rarest.clear();
        }
        rarest.emplace_back(n, std::move(h));
      }
      if (!rarest.empty()) {
        auto& pick =
            rarest[std::uniform_int_distribution<std::size_t>(0, rarest.size() - 1)(rng_)];
        return {pick.second, pick.first};
      }
    }
    if (missing_idle) return {};
    // Endgame: every missing piece is in flight; duplicate one from another parent.
    for (std::uint32_t n = 0; n < count_; ++n) {
      if (!wanted(n) || in_flight_[n] != 1) continue;
      if (auto h = holder(n, true); !h.empty()) return {h, n};
    }
    return {};
  }

  void piece_failed(std::uint32_t n, const std::string& pid, v1::PieceFailed::Reason reason,
                    const std::string& msg) {
    m().piece_failures.with({reason_name(reason)}).inc();
    m().failures.with({"peer_piece"}).inc();
    log()->debug("task {}: piece {} from {}: {}", short_id(), n, pid, msg);
    v1::PeerEvent ev;
    auto* f = ev.mutable_piece_failed();
    f->set_index(n);
    f->set_parent_host_id(pid);
    f->set_reason(reason);
    f->set_message(msg);
    send(std::move(ev));
  }

  static awaitable<void> fetch(std::shared_ptr<swarm_session> self, std::string pid,
                               std::string addr, std::uint32_t n, bool first_copy,
                               bool sibling_relay, std::uint64_t gen) {
    const auto start = clock::now();
    auto t = self->t_;
    const std::uint64_t size = piece_size(n, t->content_length(), t->piece_length());
    co_await self->tm_.download_limit_.acquire(size);
    peer_get_info info;
    std::string target = "/v1/tasks/" + self->id() + "/pieces/" + std::to_string(n);
    std::string to = addr;
    // Relayed to other daemons as it arrives (unless an endgame's other copy
    // is relayed already). Every way out but handing the piece on to
    // accept() or parked_ (which end the relay once it is readable or
    // refused) ends it here.
    std::shared_ptr<partial_piece> relayed;
    struct end_relay {
      task& t;
      std::uint32_t n;
      const std::shared_ptr<partial_piece>& p;
      ~end_relay() {
        if (p) t.stop_receiving(n, p.get());
      }
    } relay_guard{*t, n, relayed};
    std::function<void(const std::shared_ptr<partial_piece>&)> on_body =
        [&relayed, t, n](const std::shared_ptr<partial_piece>& p) {
          if (t->start_receiving(n, p)) relayed = p;
        };
    // A new connection per piece: kept ones (no connect, TCP's window open)
    // made 8 nodes x 512 MiB at 25 MiB/s slower, 24.51 s against 23.26
    // (bench/README.md).
    peer_conn conn(self->ex_);
    auto r = co_await peer_get(conn, std::move(to), std::move(target), size + 1,
                               self->s_.opts_.piece_timeout, &info, size, std::move(on_body));
    auto& ps = self->parents_[pid];
    log()->trace(
        "task {}: piece {} from '{}': {} after {} ms", self->short_id(), n, pid,
        r ? std::to_string(r->status) : r.error().message,
        std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - start).count());
    --ps.in_flight;
    --self->total_in_flight_;
    --self->in_flight_[n];
    self->first_copies_ -= first_copy;
    self->relays_in_flight_ -= sibling_relay;
    self->fetching_[n].erase(pid);
    if (self->work_gen_ != gen || !self->downloading()) co_return;
    if (!r && info.relayed) {
      // The parent was relaying a piece it was receiving, and its own
      // download of it ended: not this parent's failure. Ask elsewhere.
      log()->debug("task {}: piece {} relayed by {} ended early: {}", self->short_id(), n, pid,
                   r.error().message);
      ps.declined[n] = clock::now() + kDeclinedFor;
      if (n < ps.recv.size()) ps.recv[n] = false;
      self->pump();
      co_return;
    }
    if (!r) {
      self->piece_failed(n, pid,
                         info.timed_out ? v1::PieceFailed::TIMEOUT : v1::PieceFailed::CONNECT,
                         r.error().message);
      ps.busy_until = clock::now() + std::chrono::seconds(1);
      ps.grace_until = {};  // only the scheduler's set may bring it back
      self->pump();
      co_return;
    }
    if (r->status == 409) {
      // A source sends each piece once while it reads origin (see
      // task::claim_upload): this one went to another child, take it from a peer.
      ps.declined[n] = clock::now() + kDeclinedFor;
      self->pump();
      co_return;
    }
    if (!r->piece) {
      if (r->status == 404 && n < ps.has.size()) ps.has[n] = false;
      if (r->status == 404 && n < ps.recv.size()) ps.recv[n] = false;
      if (r->status == 503) ps.busy_until = clock::now() + std::chrono::milliseconds(200);
      self->piece_failed(n, pid, v1::PieceFailed::UNAVAILABLE,
                         "status " + std::to_string(r->status) + ", " +
                             std::to_string(r->body.size()) + " bytes");
      self->pump();
      co_return;
    }
    if (self->have_[n]) {  // the endgame's other copy won
      self->pump();
      co_return;
    }
    auto body = std::move(r->piece);
    auto checking =
        check_and_write(body, t->handle_, piece_offset(n, t->piece_length()), self->digests_[n]);
    // Not needed again while it is hashed (on a loaded machine that took long
    // enough for pump() to fetch a second copy of many pieces).
    self->verifying_pieces_.insert(n);
    auto checked = co_await asio::co_spawn(self->tm_.blocking_.get_executor(), std::move(checking),
                                           use_awaitable);
    self->verifying_pieces_.erase(n);
    if (self->work_gen_ != gen || !self->downloading()) co_return;
    if (self->have_[n]) {
      self->pump();
      co_return;
    }
    relayed.reset();  // handed on below
    if (self->digests_[n].empty()) {
      // Fetched before the scheduler's digest arrived: verified once it does.
      self->parked_[n] = parked_piece{std::move(body), std::move(checked.sha256), pid, start};
      self->pump();
      co_return;
    }
    parked_piece p{std::move(body), std::move(checked.sha256), pid, start};
    if (!checked.written) {
      self->accept(n, std::move(p));  // a mismatch, or the digest arrived meanwhile
    } else if (*checked.written) {
      self->accepted(n, p);
    } else {
      self->fail(std::move(*checked.written).error());
    }
    self->pump();
  }

  struct parked_piece {
    std::shared_ptr<const partial_piece> body;
    std::string sha256;
    std::string parent;
    clock::time_point start;
  };

  // Verifies a piece from a parent against the scheduler's digest (never
  // against anything the parent says), then writes it.
  void accept(std::uint32_t n, parked_piece p) {
    if (have_[n] || !downloading()) return;
    if (p.sha256 != digests_[n]) {
      // Never trust the parent: drop the bytes, block it for this task.
      piece_failed(n, p.parent, v1::PieceFailed::DIGEST_MISMATCH,
                   "piece hashes to " + p.sha256 + ", scheduler says " + digests_[n]);
      log()->warn("task {}: piece {} from parent {} failed verification; blocking it",
                  short_id(), n, p.parent);
      blocked_.insert(p.parent);
      t_->stop_receiving(n, p.body.get());
      return;
    }
    if (auto w = t_->handle_->write(piece_offset(n, t_->piece_length()), p.body->bytes()); !w) {
      fail(std::move(w).error());
      return;
    }
    accepted(n, p);
  }

  // A verified piece from a parent is written.
  void accepted(std::uint32_t n, const parked_piece& p) {
    peer_bytes_ += p.body->size();
    m().peer_bytes.with({p.parent}).inc(static_cast<double>(p.body->size()));
    m().bytes.inc(static_cast<double>(p.body->size()));
    m().fetch_seconds.observe(std::chrono::duration<double>(clock::now() - p.start).count());
    on_piece_written(n, p.sha256, p.parent);
  }

  void accept_parked() {
    for (auto it = parked_.begin(); it != parked_.end();) {
      if (digests_[it->first].empty()) {
        ++it;
        continue;
      }
      auto n = it->first;
      auto p = std::move(it->second);
      it = parked_.erase(it);
      accept(n, std::move(p));
    }
  }

  swarm& s_;
  task_manager& tm_;
  std::shared_ptr<task> t_;
  source::request_target origin_;
  asio::any_io_executor ex_;
  const std::uint32_t count_;
  std::vector<bool> have_;              // written (and verified when from a parent)
  std::vector<std::string> digests_;    // the scheduler's (or, as source, our own) piece digests
  std::vector<std::uint32_t> in_flight_;
  std::map<std::uint32_t, std::set<std::string>> fetching_;
  std::size_t total_in_flight_ = 0;
  // Requests in flight to a source reading origin (fetch_slots_used counts
  // them twice).
  std::size_t first_copies_ = 0;
  // Requests in flight for pieces a parent other than the reading source is
  // still receiving (sibling_relay_allowed caps them).
  std::size_t relays_in_flight_ = 0;
  std::map<std::string, parent_state> parents_;
  std::set<std::string> blocked_;
  std::set<std::uint32_t> origin_list_;
  std::deque<std::pair<std::uint32_t, std::uint32_t>> origin_queue_;
  std::optional<pending_piece> tail_pending_;
  std::map<std::uint32_t, parked_piece> parked_;  // fetched, waiting for the digest
  std::set<std::uint32_t> verifying_pieces_;       // fetched, being hashed
  std::shared_ptr<peer_stream> stream_;
  std::size_t idx_ = 0;
  std::mt19937 rng_;
  std::uint64_t stream_gen_ = 0;
  std::uint64_t work_gen_ = 0;
  std::uint64_t origin_gen_ = 0;
  std::uint64_t peer_bytes_ = 0;
  int reconnect_failures_ = 0;
  bool ever_decided_ = false;
  bool is_source_ = false;
  // How long a parent's 409 for a piece stands (then it may be asked again).
  static constexpr clock::duration kDeclinedFor = std::chrono::milliseconds(1000);
  bool done_ = false;
  bool ended_ = false;
  bool fell_back_ = false;
  bool verifying_ = false;
  std::unique_ptr<sha256> whole_ = std::make_unique<sha256>();  // pieces [0, hashed_)
  bool sealed_ = false;             // the scheduler's digest list is sealed (list_verifies)
  bool all_digests_known_ = false;  // every digests_ entry is set (list_verifies)
  bool whole_hash_needed_ = false;  // a piece from origin or disk, or a digest off the list
  std::vector<bool> from_origin_ = std::vector<bool>(count_, false);  // read from origin here
  std::uint32_t hashed_ = 0;
  bool hashing_ = false;
  std::size_t origin_hashing_ = 0;  // origin pieces being hashed before their commit
  std::vector<bool> reported_;      // PieceFinished sent
  bool reconnecting_ = false;
};

swarm::swarm(task_manager& tm, scheduler_client& sched, metrics::registry& reg, swarm_options opts)
    : tm_(tm), sched_(sched), metrics_(reg), opts_(std::move(opts)) {
  tm_.set_swarm(this);
}

swarm::~swarm() { tm_.set_swarm(nullptr); }

void swarm::start(std::shared_ptr<task> t, source::request_target origin) {
  const auto id = t->id().hex;
  if (auto it = sessions_.find(id); it != sessions_.end()) {
    it->second->end();  // a finished copy that was evicted, or a poisoned one
    sessions_.erase(it);
  }
  if (stopped_) return;
  auto s = std::make_shared<swarm_session>(*this, std::move(t), std::move(origin));
  sessions_[id] = s;
  s->begin();
}

std::size_t swarm::active_parents() const {
  std::set<std::string> ids;
  for (const auto& [id, s] : sessions_) s->parents_in_use(ids);
  return ids.size();
}

void swarm::stop() {
  stopped_ = true;
  auto all = std::move(sessions_);
  sessions_.clear();
  for (auto& [id, s] : all) s->end();
}

}  // namespace shoal::transfer
