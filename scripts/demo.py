#!/usr/bin/env python3
"""Shoal's main job on one machine: a local registry holding a generated
ModelPack model, shoal-scheduler, N shoald nodes, and one containerd per node
pulling the model through its own shoald at the same moment. Prints each
node's time and where its bytes came from, and what the registry served
(from the registry's own access log) against the model size."""

import argparse
import shutil
import sys
import tempfile
import threading
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
        art = h.push_modelpack(reg, work, "models/demo", weight_size=args.weight_size * MiB)
        model_bytes = sum(b.size for b in art.blobs)
        print(f"model      {reg.hostport}/models/demo:{art.tag}  {human(model_bytes)} in "
              f"{len(art.blobs)} blobs, manifest {art.manifest_digest[:19]}…")
        for b in art.blobs:
            print(f"  {b.media_type:48s} {b.digest[:19]}…  {human(b.size)}")

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
            c = h.Containerd(work, name=f"containerd{i + 1}").start()
            procs.append(c)
            c.set_mirror(reg.hostport, d.mirror, fallback=False)
            nodes.append((d, c))
            print(f"node{i + 1}      shoald mirror {d.mirror}, peer port {d.peer_port}; "
                  f"containerd pulls through it")

        mark = reg.log_mark()
        times, errors = {}, {}

        def pull(i, c):
            t0 = time.monotonic()
            try:
                c.fetch(f"{reg.hostport}/models/demo:{art.tag}")
                times[i] = time.monotonic() - t0
            except Exception as e:  # reported below
                errors[i] = e

        print(f"\npulling on all {args.nodes} nodes at once (limit {args.rate}/s per node)…")
        t0 = time.monotonic()
        threads = [threading.Thread(target=pull, args=(i, c)) for i, (_, c) in enumerate(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.monotonic() - t0
        if errors:
            for i, e in errors.items():
                print(f"node{i + 1}: pull failed: {e}")
            return 1
        reg.settle()

        print(f"\n{'node':6} {'time s':>7} {'from peers':>12} {'from registry':>14} {'verified':>9}")
        for i, (d, c) in enumerate(nodes):
            m = d.metrics()
            got = c.content_digests()
            ok = all(b.digest in got for b in art.blobs)
            print(f"node{i + 1:<2} {times[i]:7.2f} {human(m.get('shoal_peer_bytes_total', 0)):>12} "
                  f"{human(m.get('shoal_source_bytes_total', 0)):>14} {'yes' if ok else 'NO':>9}")
            if not ok:
                return 1
        origin = sum(reg.blob_body_bytes(b.digest, since=mark) for b in art.blobs)
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
