"""pytest fixtures for Shoal integration tests.

Every fixture picks its own loopback ports and directories and stops what it
started in a `finally`, so test files can run in parallel (ctest -j) and a
failing test leaves no process behind. Per-test output lives in
$SHOAL_TEST_OUTPUT/<test file>/<test name>/ (logs are kept; large data files
are removed after a passing test, or always unless SHOAL_TEST_KEEP=1).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import shoal_harness as h  # noqa: E402

LARGE_FILE = 8 * h.MiB


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _is_our_log(p: Path, root: Path) -> bool:
    """Logs of the processes (not e.g. RocksDB's 64 MiB preallocated WAL
    `data/meta/000004.log` or containerd's files)."""
    rel = p.relative_to(root).parts
    return p.suffix == ".log" and not {"data", "root", "storage"} & set(rel[:-1])


def _cleanup_dir(path: Path, passed: bool) -> None:
    if os.environ.get("SHOAL_TEST_KEEP") == "1":
        return
    # keep logs and (after a failure) small files for inspection; drop bulk data
    for p in sorted(path.rglob("*"), reverse=True):
        try:
            if p.is_symlink() or p.is_file():
                # logs, and screenshots (test_dashboard's browser) are kept
                if _is_our_log(p, path) or p.suffix == ".png":
                    continue
                st = p.stat()
                # allocated size too: RocksDB preallocates its WAL (64 MiB, sparse size)
                if passed or max(st.st_size, st.st_blocks * 512) >= LARGE_FILE:
                    p.unlink()
            elif p.is_dir():
                try:
                    p.rmdir()  # only if empty
                except OSError:
                    pass
        except OSError:
            pass


def _dir_for(node, scope_name: str) -> Path:
    d = h.output_root() / scope_name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def test_dir(request) -> Path:
    """$SHOAL_TEST_OUTPUT/<module>/<test>/, emptied first."""
    mod = Path(request.node.fspath).stem
    name = request.node.name.replace("/", "_").replace("[", "_").replace("]", "")
    d = _dir_for(request.node, f"{mod}/{name}")
    yield d
    rep = getattr(request.node, "rep_call", None)
    passed = rep is not None and rep.passed
    _cleanup_dir(d, passed)


# ---- factories: everything they start is stopped at teardown ---------------


@pytest.fixture
def registry_factory(test_dir):
    started: list[h.Registry] = []

    def make(htpasswd=None, name="registry", workdir=None) -> h.Registry:
        r = h.Registry(workdir or test_dir, htpasswd=htpasswd, name=name)
        started.append(r)
        return r.start()
    try:
        yield make
    finally:
        for r in started:
            r.stop()


@pytest.fixture
def registry(registry_factory) -> h.Registry:
    return registry_factory()


@pytest.fixture
def shoald_factory(test_dir):
    """make(**Shoald kwargs) → a started Shoald (pass start=False to defer)."""
    started: list[h.Shoald] = []

    def make(start=True, **kw) -> h.Shoald:
        if not h.shoald_binary().exists():
            pytest.fail(f"shoald binary not found at {h.shoald_binary()} "
                        "(build it, or set SHOAL_BUILD_DIR / SHOALD_BIN)")
        s = h.Shoald(test_dir, **kw)
        started.append(s)
        if start:
            s.start()
        return s
    try:
        yield make
    finally:
        crashed = []
        for s in started:
            if s.proc is not None:
                if not s.proc.alive():  # died on its own during the test
                    crashed.append(f"{s.name} exited with {s.proc.popen.returncode}:\n"
                                   f"{s.log_tail()}")
                s.kill9()
        if crashed:
            pytest.fail("shoald died during the test\n" + "\n".join(crashed), pytrace=False)


@pytest.fixture
def scheduler_factory(test_dir):
    """make(**Scheduler kwargs) → a started shoal-scheduler (start=False to defer)."""
    started: list[h.Scheduler] = []

    def make(start=True, **kw) -> h.Scheduler:
        if not h.scheduler_binary().exists():
            pytest.fail(f"shoal-scheduler binary not found at {h.scheduler_binary()}")
        s = h.Scheduler(test_dir, **kw)
        started.append(s)
        if start:
            s.start()
        return s
    try:
        yield make
    finally:
        for s in started:
            s.kill9()


@pytest.fixture
def containerd_factory(test_dir):
    started: list[h.Containerd] = []

    def make(name="containerd") -> h.Containerd:
        c = h.Containerd(test_dir, name=name)
        started.append(c)
        return c.start()
    try:
        yield make
    finally:
        for c in started:
            c.stop()


@pytest.fixture
def proxy_factory():
    started: list[h.CorruptingProxy] = []

    def make(host, port) -> h.CorruptingProxy:
        p = h.CorruptingProxy(host, port)
        started.append(p)
        return p.start()
    try:
        yield make
    finally:
        for p in started:
            p.stop()


@pytest.fixture
def fake_upstream_factory():
    started: list[h.FakeUpstream] = []

    def make() -> h.FakeUpstream:
        u = h.FakeUpstream()
        started.append(u)
        return u.start()
    try:
        yield make
    finally:
        for u in started:
            u.stop()
