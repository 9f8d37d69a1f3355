"""bench/swarm/run keeps working: a small run on emulated links (4 nodes,
32 MiB) writes valid JSON and leaves no namespace or process behind, also
when it is interrupted. Timings are not judged here (bench/README.md)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shoal_harness as h

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "swarm" / "run"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for ip netns and tc")


def namespaces(pid: int) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines() if l.startswith(f"shswarm{pid}-")]


def bench_argv(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, str(RUN), "--build-dir", str(h.build_dir()),
            "--work-dir", str(tmp_path), "--json", str(tmp_path / "swarm.json"), *extra]


def kill_and_clean(p: subprocess.Popen) -> None:
    """A test that failed with the benchmark still running: SIGKILL leaves
    its namespaces, which `--cleanup` removes (the benchmark's pid is gone)."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        subprocess.run([sys.executable, str(RUN), "--cleanup"], capture_output=True, timeout=120)


def run_to_end(tmp_path: Path, *extra: str) -> subprocess.Popen:
    """Runs the benchmark to its end (150 s at most); it must succeed."""
    p = subprocess.Popen(bench_argv(tmp_path, *extra), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        text, _ = p.communicate(timeout=150)
    finally:
        kill_and_clean(p)
    print(text)
    assert p.returncode == 0, text
    return p


ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


def test_small_run_writes_json_and_cleans_up(tmp_path):
    allowed = ALLOWED_CC.read_text()
    p = run_to_end(tmp_path, "--nodes", "4", "--size", "32MiB", "--runs", "1", "--rate", "25MiB")
    out = json.loads((tmp_path / "swarm.json").read_text())
    for k in ("nodes", "size_bytes", "rate_bytes_per_s", "origin_rate_bytes_per_s", "bound_s",
              "shoal_total_s", "shoal_p50_s", "shoal_max_node_s", "direct_total_s",
              "origin_bytes", "machine", "loadavg_before"):
        assert k in out, k
    assert out["nodes"] == 4 and out["size_bytes"] == 32 << 20
    # T* = 32 MiB / 25 MiB/s: nobody beats the links
    assert out["bound_s"] == pytest.approx(1.28, rel=0.01)
    assert out["shoal_total_s"] >= out["bound_s"] * 0.9
    assert out["direct_total_s"] >= 4 * 1.28 * 0.9
    # the registry served the blob about once for Shoal, four times directly
    assert out["origin_bytes"] >= out["size_bytes"]
    assert out["direct_measured"]["origin_bytes"] == 4 * out["size_bytes"]
    assert len(out["shoal_runs"][0]["node_s"]) == 4
    # each node's failed piece requests, in total and by reason
    for node, v in out["shoal_runs"][0]["per_node"].items():
        assert sum(v["piece_failures_by_reason"].values()) == v["piece_failures"], node
    # the emulated hosts ran Linux's default congestion control, whatever this
    # machine's is, and the machine's allowed list is as it was
    assert out["congestion_control"] == "cubic"
    assert out["congestion_control_system"]
    assert ALLOWED_CC.read_text() == allowed
    assert namespaces(p.pid) == []
    assert not list(tmp_path.glob("shswarm*")), "work directory left behind"


def test_traced_run_is_summarised(tmp_path):
    """bench/swarm/trace_summary reads a kept traced run's logs: every piece
    fetch that carried a piece is counted once among the kinds, and each
    child's shares of time by fetches open add up to the whole."""
    p = run_to_end(tmp_path, "--nodes", "3", "--size", "32MiB", "--runs", "1", "--direct-runs", "0",
                   "--rate", "25MiB", "--log-level", "trace", "--keep")
    assert namespaces(p.pid) == []
    kept = list(tmp_path.glob("shswarm*"))
    assert len(kept) == 1, kept
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "swarm" / "trace_summary"),
                         str(kept[0]), "--rate", "25MiB"],
                        capture_output=True, text=True, timeout=60)
    print(cp.stdout, cp.stderr)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    statuses = json.loads(lines[0].split(":", 1)[1].strip().replace("'", '"'))
    kinds = [l for l in lines if l.startswith("  child, ") or l.startswith("  source, ")]
    assert sum(int(l.split(": ", 1)[1].split(",")[0]) for l in kinds) == statuses["200"]
    # 32 MiB in 4 MiB pieces to each of 2 children, and each child's time split
    assert statuses["200"] >= 16
    shares = [l for l in lines if l.startswith("  n") and ": 0:" in l]
    assert len(shares) == 2, lines
    for l in shares:
        assert sum(float(x.split(":")[1]) for x in l.split(": ", 1)[1].split()) == \
            pytest.approx(1.0, abs=0.03), l


def test_interrupted_run_removes_everything(tmp_path):
    allowed = ALLOWED_CC.read_text()
    p = subprocess.Popen(bench_argv(tmp_path, "--nodes", "3", "--size", "256MiB", "--runs", "1",
                                    "--rate", "10MiB"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        # wait until the nodes' daemons run inside their namespaces
        def daemons_up():
            ns = namespaces(p.pid)
            return any(n.endswith("-n2") for n in ns) and any(
                subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                               text=True).stdout.strip() for n in ns if n.endswith("-n2"))
        h.wait_until(daemons_up, timeout=90)
        time.sleep(2)
        # `ip netns pids` walks /proc and can come back empty on a busy
        # machine: look again for a while, and say why if the run ended
        pids = []
        deadline = time.monotonic() + 15
        while not pids and p.poll() is None and time.monotonic() < deadline:
            for n in namespaces(p.pid):
                pids += subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                       text=True).stdout.split()
            if not pids:
                time.sleep(0.2)
        if not pids:
            out = p.communicate(timeout=60)[0] if p.poll() is not None else ""
            raise AssertionError(f"no process in the benchmark's namespaces (exit {p.poll()}):\n"
                                 f"{out[-3000:]}")
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    finally:
        kill_and_clean(p)
    assert p.returncode != 0
    assert namespaces(p.pid) == [], out
    assert ALLOWED_CC.read_text() == allowed
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", f"process {pid} left"
    assert not list(tmp_path.glob("shswarm*")), "work directory left behind"
