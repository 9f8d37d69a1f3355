#!/usr/bin/env python3
"""Shoal's main job on one machine: a generated model directory is pushed to
a local registry with `shoalctl push` (a ModelPack artifact), then N shoald
nodes (with shoal-scheduler) pull it at the same moment with `shoalctl pull`,
each into its own directory. Prints each node's time and where its bytes
came from, checks every copy is byte-identical to the source (modes too, less
write bits: pulled files are read-only hard links from the cache),
and what the registry served (from its own access log) against the model size."""

import argparse
import concurrent.futures as cf
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test" / "integration"))
import shoal_harness as h  # noqa: E402

MiB = 1 << 20


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=3, help="shoald nodes (>= 3)")
    ap.add_argument("--weight-size", type=int, default=256, help="weight layer size in MiB")
    ap.add_argument("--rate", default="100MiB",
                    help="per-node upload and download limit, so one machine behaves like "
                         "nodes with real links (0 = unlimited)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--hold", type=float, default=0,
                    help="seconds to keep everything running after the pull (to look at the "
                         "dashboard); Ctrl-C ends it early")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
    procs = []
    try:
        print(f"== Shoal demo: {args.nodes} nodes pulling one model through the swarm "
              f"(work dir {work})")
        reg = h.Registry(work / "registry").start()
        procs.append(reg)
        print(f"registry   http://{reg.hostport} (docker-registry, the origin)")
        src = work / "model"
        files = h.build_model_dir(src, args.weight_size * MiB)
        ref = f"{reg.hostport}/models/demo:v1"
        t0 = time.monotonic()
        out = h.shoalctl(["push", "--plain-http", "--state-dir", "none", str(src), ref],
                         work / "push.log")
        model_bytes = sum((src / rel).stat().st_size for rel in files)
        print(f"pushed     {out.stdout.strip().splitlines()[-1]}")
        print(f"           with shoalctl push in {time.monotonic() - t0:.1f} s: "
              f"{len(files)} files, {human(model_bytes)}, one raw ModelPack layer per file")
        for rel in sorted(files):
            print(f"  {rel:52s} {human((src / rel).stat().st_size):>10}  mode {files[rel][1]:o}")

        sched = h.Scheduler(work).start()
        procs.append(sched)
        print(f"scheduler  grpc {sched.addr}  metrics http://127.0.0.1:{sched.http_port}/metrics")
        print(f"dashboard  http://127.0.0.1:{sched.http_port}/  (open it now to watch the pull; "
              f"--hold N keeps it up N seconds after the pull)")

        limits = []
        if args.rate != "0":
            limits = ["--upload-rate-limit", args.rate, "--download-rate-limit", args.rate]
        nodes = []
        for i in range(args.nodes):
            d = h.Shoald(work, name=f"node{i + 1}", insecure=[reg.hostport],
                         extra_args=["--scheduler", sched.addr, "--zone", "demo"] + limits)
            d.start()
            procs.append(d)
            nodes.append(d)
            print(f"node{i + 1}      shoald mirror {d.mirror}, peer port {d.peer_port}, "
                  f"API unix:{d.api_socket}")

        mark = reg.log_mark()
        times, errors = {}, {}

        def pull(i, d):
            t = time.monotonic()
            dest = work / f"pulled-node{i + 1}"
            r = h.shoalctl(["pull", ref, "--output", str(dest), "--daemon",
                            f"unix:{d.api_socket}", "-q"], work / f"pull-node{i + 1}.log",
                           check=False)
            if r.returncode != 0:
                errors[i] = r.stdout.strip()[-500:]
            times[i] = time.monotonic() - t
            return dest

        print(f"\npulling on all {args.nodes} nodes at once with shoalctl pull "
              f"(limit {args.rate}/s per node)…")
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(args.nodes) as ex:
            dests = list(ex.map(lambda a: pull(*a), enumerate(nodes)))
        total = time.monotonic() - t0
        if errors:
            for i, e in errors.items():
                print(f"node{i + 1}: pull failed: {e}")
            return 1
        reg.settle()

        print(f"\n{'node':6} {'time s':>7} {'from peers':>12} {'from registry':>14} {'identical':>9}")
        for i, d in enumerate(nodes):
            m = d.metrics()
            ok = h.dir_contents(dests[i]) == h.as_pulled(files)
            print(f"node{i + 1:<2} {times[i]:7.2f} {human(m.get('shoal_peer_bytes_total', 0)):>12} "
                  f"{human(m.get('shoal_source_bytes_total', 0)):>14} {'yes' if ok else 'NO':>9}")
            if not ok:
                return 1
        origin = reg.all_blob_body_bytes(since=mark)
        print(f"\nall nodes done in {total:.2f} s")
        print(f"registry served {human(origin)} of blob bodies for {args.nodes} nodes: "
              f"{origin / model_bytes:.2f}x the model size "
              f"(without Shoal: {args.nodes:.0f}x = {human(args.nodes * model_bytes)})")
        if args.hold > 0:
            print(f"\ndashboard  http://127.0.0.1:{sched.http_port}/  up for {args.hold:.0f} s "
                  f"(Ctrl-C to stop)")
            try:
                time.sleep(args.hold)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception as e:  # keep cleaning up
                print(f"cleanup: {e}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
