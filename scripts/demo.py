#!/usr/bin/env python3
"""Shoal's main job on one machine: a local registry holding a generated
ModelPack model, shoald in front of it, and containerd pulling the model
through the mirror twice. Prints what moved and what the registry served
(from the registry's own access log)."""

import argparse
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
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weight-size", default=256, type=int, help="weight layer size in MiB")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
    procs = []
    try:
        print(f"== Shoal demo (work dir {work})")
        reg = h.Registry(work / "registry").start()
        procs.append(reg)
        print(f"registry       http://{reg.hostport} (docker-registry, the origin)")
        art = h.push_modelpack(reg, work, "models/demo", weight_size=args.weight_size * MiB)
        print(f"model          {reg.hostport}/models/demo:{art.tag}  manifest {art.manifest_digest}")
        for b in art.blobs:
            print(f"  {b.media_type:48s} {b.digest[:19]}…  {human(b.size)}")
        model_bytes = sum(b.size for b in art.blobs)

        shoald = h.Shoald(work, insecure=[reg.hostport]).start()
        procs.append(shoald)
        print(f"shoald         mirror http://{shoald.mirror}  admin http://127.0.0.1:{shoald.admin_port}/metrics")

        for round_ in (1, 2):
            ctd = h.Containerd(work, name=f"containerd-{round_}").start()
            procs.append(ctd)
            ctd.set_mirror(reg.hostport, shoald.mirror, fallback=False)
            mark = reg.log_mark()
            t0 = time.monotonic()
            ctd.fetch(f"{reg.hostport}/models/demo:{art.tag}")
            took = time.monotonic() - t0
            reg.settle()
            got = ctd.content_digests()
            missing = [b.digest for b in art.blobs if b.digest not in got]
            if missing:
                print(f"containerd is missing {missing}")
                return 1
            origin = sum(reg.blob_body_bytes(b.digest, since=mark) for b in art.blobs)
            print(f"\npull {round_} (fresh containerd, `ctr content fetch` through shoald): {took:.2f} s")
            print(f"  containerd verified {len(art.blobs)} blobs, {human(model_bytes)}")
            print(f"  registry served blob bodies: {human(origin)} "
                  f"({origin / model_bytes:.2f}x the model)")
            ctd.stop()
            procs.remove(ctd)

        m = shoald.metrics()
        print("\nshoald metrics:")
        for k in ("shoal_source_bytes_total", "shoal_mirror_client_bytes_total",
                  "shoal_cache_hits_total", "shoal_cache_misses_total", "shoal_storage_disk_bytes"):
            print(f"  {k:34s} {m.get(k, 0):.0f}")
        rc = shoald.stop()
        procs.remove(shoald)
        print(f"\nshoald stopped with exit code {rc}")
        return 0 if rc == 0 else 1
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
