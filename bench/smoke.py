#!/usr/bin/env python3
"""ctest smoke runs of the benchmarks in a tiny mode (label `bench`): each
runs from the build tree and checks that the JSON has its fields and sane
values (counts, byte totals, positive times) — never timings against goals.

  bench/smoke.py datapath    p2p mode with a 64 MiB blob, one run
  bench/smoke.py scheduler   50 hosts x 2 tasks x 20 peers, 5 s of load (pinned with 2+ CPUs),
                             then 3 s of it against the floor (run --floor)
"""

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"smoke check failed: {what}")


def positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0 and math.isfinite(x)


def run(argv: list[str], timeout: float) -> None:
    print("$", " ".join(argv), flush=True)
    cp = subprocess.run(argv, text=True, timeout=timeout)
    check(cp.returncode == 0, f"{argv[0]} exited {cp.returncode}")


def datapath(build: str, out: Path) -> None:
    mib = 1 << 20
    run([str(ROOT / "bench/datapath/run"), "--mode", "p2p", "--p2p-size", "64MiB", "--runs", "1",
         "--build-dir", build, "--json", str(out)], timeout=240)
    j = json.loads(out.read_text())
    p = j["p2p"]
    check(p["size_bytes"] == 64 * mib, "p2p size")
    check(positive(p["curl_direct_s"]), "curl time")
    for name in ("warm_parent", "simultaneous"):
        s = p[name]
        check(positive(s["b_s"]) and positive(s["throughput_vs_curl"]), f"{name} times")
        check(s["b_peer_bytes"] >= (64 if name == "warm_parent" else 57.6) * mib,
              f"{name}: B got {s['b_peer_bytes']} bytes from A")
        for d in ("a", "b"):
            check(s[f"{d}_cpu_s_per_gib"] >= 0, f"{name} {d} cpu")
            check(0 < s[f"{d}_peak_rss_mib"] < 4096, f"{name} {d} rss")
    check(p["warm_parent"]["runs"][0]["registry_bytes_during_b"] == 0,
          "warm parent: the registry served bytes during B's download")
    check(p["simultaneous"]["runs"][0]["registry_bytes"] <= 1.05 * 64 * mib,
          "simultaneous: the registry served more than the blob")


def scheduler(build: str, out: Path) -> None:
    pin = len(os.sched_getaffinity(0)) >= 2
    run([str(ROOT / "bench/scheduler/run"), "--hosts", "50", "--tasks", "2", "--peers", "20",
         "--pieces", "16", "--ramp-rate", "200", "--duration", "5", "--churn", "4", "--heartbeat", "1", "--build-dir", build,
         "--json", str(out)] + (["--pin"] if pin else []), timeout=120)
    j = json.loads(out.read_text())
    if pin:
        p = j["pinning"]
        check(p["scheduler_cpus"] and p["generator_cpus"] and not p["shared"], "pinning recorded")
    check(sum(j["parent_choices"].values()) > 0, "parent choices (shoal_scheduler_parent_choices_total)")
    check(len(j["server_by_second"]) >= 3, "the scheduler's own latency per second")
    cpu = j["cpu_by_second"]
    check(len(cpu) >= 5 and all(0 <= r["machine_busy"] <= 1 for r in cpu), "CPU per second")
    check(sum(r["server_cores"] for r in cpu) > 0 and sum(r["generator_cores"] for r in cpu) > 0,
          "the scheduler's and the generator's CPU per second")
    check(j["config"]["streams"] == 40, "stream count")
    # Each host on its own 1 s timer over >= 5 s of load: >= 4 beats each, all answered.
    check(j["config"]["heartbeats_ok"] >= 4 * 50 and j["config"]["heartbeats_failed"] == 0,
          f"heartbeats: {j['config']['heartbeats_ok']} answered, {j['config']['heartbeats_failed']} failed")
    lat = j["decision_latency"]
    check(lat["register"]["count"] == 40, f"register samples: {lat['register']['count']} of 40")
    for k in ("p50_ms", "p99_ms"):
        check(positive(lat["all"][k]), f"latency {k}")
    check(lat["all"]["p50_ms"] <= lat["all"]["p99_ms"], "p50 <= p99")
    check(j["decisions"]["from_origin"] >= 2, "a source per task")
    check(j["decisions"]["abort"] == 0, "no aborts")
    check(j["events"]["piece_finished"] > 0, "piece events")
    check(j["streams"]["opened"] >= 40 and j["streams"]["ended"] == j["streams"]["opened"]
          and j["streams"]["errors"] == 0, "streams closed cleanly")
    s = j["scheduler"]
    check(positive(s["cpu_s_total"]), "scheduler CPU")
    check(0 < s["peak_rss_mib"] < 4096, "scheduler RSS")
    check(j["server_decision_latency"]["count"] > 0, "scheduler's own latency histogram")
    check(j["scheduler_alive_at_end"], "scheduler survived")
    check(j["server"] == "shoal-scheduler", "server recorded")

    # The same load against the floor (the service with no scheduling in it).
    run([str(ROOT / "bench/scheduler/run"), "--floor", "--hosts", "50", "--tasks", "2", "--peers", "20",
         "--pieces", "16", "--ramp-rate", "200", "--duration", "3", "--churn", "4", "--heartbeat", "1",
         "--build-dir", build, "--json", str(out)], timeout=120)
    j = json.loads(out.read_text())
    check(j["server"] == "floor", "floor recorded")
    check(j["decision_latency"]["register"]["count"] == 40, "floor: a decision for every Register")
    check(j["decisions"]["from_origin"] == 2 and j["decisions"]["digests"] >= 38, "floor: sources and digests")
    check(j["events"]["piece_finished"] > 0, "floor: piece events")
    check(j["streams"]["ended"] == j["streams"]["opened"] and j["streams"]["errors"] == 0,
          "floor: streams closed cleanly")
    check(j["scheduler"]["peak_rss_mib"] > 0 and j["scheduler_alive_at_end"], "floor process figures")


def main() -> int:
    which = sys.argv[1]
    build = os.environ.get("SHOAL_BUILD_DIR") or str(ROOT / "build/dev")
    with tempfile.TemporaryDirectory(prefix=f"shoal-smoke-{which}-") as tmp:
        out = Path(tmp) / "result.json"
        {"datapath": datapath, "scheduler": scheduler}[which](build, out)
    print(f"{which} smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
