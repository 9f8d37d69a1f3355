#pragma once
// A transfer::task over a real store in a temporary directory: 16 MiB in 4
// pieces of 4 MiB, none held (or all, recorded finished), on its own
// io_context. For the transfer module's unit tests.

#include <stdlib.h>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>
#include <string>

#include "common/digest.h"
#include "daemon/storage/store.h"
#include "daemon/transfer/task_manager.h"

namespace shoal::test {

struct task_fixture {
  std::filesystem::path dir;
  std::unique_ptr<storage::store> store;
  boost::asio::io_context io;
  std::shared_ptr<transfer::task> t;

  explicit task_fixture(bool holds_all = false) {
    // mkdtemp replaces the X's with a unique name.
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "shoal-transfer-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    storage::options o;
    o.data_dir = dir / "data";
    o.disk_space = [] { return std::pair<std::uint64_t, std::uint64_t>{1ull << 40, 1ull << 39}; };
    auto s = storage::store::open(o);
    if (!s) FAIL(s.error().describe());
    store = std::move(s).value();
    const std::string hex(64, 'a');
    auto h = store->open_task(hex, 16 << 20, 4 << 20);  // 4 pieces
    if (!h) FAIL(h.error().describe());
    if (holds_all)
      for (std::uint32_t n = 0; n < 4; ++n)
        REQUIRE((*h)->mark_piece_finished(n, std::string(64, 'b')));
    auto d = parse_digest("sha256:" + hex);
    REQUIRE(d);
    t = std::make_shared<transfer::task>(io.get_executor(), *d, *h);
  }
  ~task_fixture() {
    t.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

}  // namespace shoal::test
