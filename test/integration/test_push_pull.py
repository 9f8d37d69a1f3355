"""The ship-models-like-code flow with Shoal alone: `shoalctl push` a model
directory, then `shoalctl pull` it on three daemons at once: every copy is
byte-identical to the source with modes kept (less write bits: the
files are read-only hard links from the cache), and the registry serves each
blob body once. With a preheat first, the pulls read no blob body at all."""

from __future__ import annotations

import concurrent.futures as cf

import shoal_harness as h

WEIGHT = 256 * h.MiB


def push(registry, test_dir, repo):
    src = test_dir / "model"
    files = h.build_model_dir(src, WEIGHT)
    ref = f"{registry.hostport}/{repo}:v1"
    h.shoalctl(["push", "--plain-http", "--state-dir", "none", "-q", str(src), ref],
               test_dir / "push.log")
    return src, files, ref


def pull_all(daemons, ref, test_dir):
    def one(d):
        out = test_dir / f"pulled-{d.name}"
        r = h.shoalctl(["pull", ref, "--output", str(out), "--daemon", f"unix:{d.api_socket}",
                        "-q"], test_dir / f"pull-{d.name}.log", check=False)
        return d, out, r
    with cf.ThreadPoolExecutor(len(daemons)) as ex:
        return list(ex.map(one, daemons))


def test_push_then_pull_on_three_daemons(registry, scheduler_factory, shoald_factory, test_dir):
    src, files, ref = push(registry, test_dir, "models/shipped")
    total = sum((src / rel).stat().st_size for rel in files)
    sched = scheduler_factory()
    daemons = [shoald_factory(name=f"node{i}", insecure=[registry.hostport],
                              extra_args=h.swarm_args(sched)) for i in range(3)]
    mark = registry.log_mark()
    for d, out, r in pull_all(daemons, ref, test_dir):
        assert r.returncode == 0, (d.name, r.stdout[-2000:])
        assert h.dir_contents(out) == h.as_pulled(files), d.name  # bytes and modes
    registry.settle()
    served = registry.all_blob_body_bytes(since=mark)
    print(f"3 nodes pulled {total >> 20} MiB; registry served {served / total:.3f}x")
    assert served <= 1.02 * total + 64 * 1024, (served, total)


def test_preheat_then_pull_reads_no_blob_body(registry, scheduler_factory, shoald_factory,
                                              test_dir):
    src, files, ref = push(registry, test_dir, "models/preheated")
    sched = scheduler_factory(extra_args=["--announce-interval", "1", "--host-ttl", "10"])
    shoald_factory(name="seed", insecure=[registry.hostport],
                   extra_args=h.swarm_args(sched, ["--seed"]))
    nodes = [shoald_factory(name=f"node{i}", insecure=[registry.hostport],
                            extra_args=h.swarm_args(sched)) for i in range(2)]
    out = h.shoalctl(["preheat", "--scheduler", sched.addr, "--timeout", "300", ref],
                     test_dir / "preheat.log")
    assert " succeeded: " in out.stdout
    registry.settle()
    mark = registry.log_mark()
    for d, out_dir, r in pull_all(nodes, ref, test_dir):
        assert r.returncode == 0, (d.name, r.stdout[-2000:])
        assert h.dir_contents(out_dir) == h.as_pulled(files), d.name
    registry.settle()
    body_reads = [r for r in registry.requests(mark)
                  if r.method == "GET" and r.blob_digest() and r.written > 0]
    assert body_reads == [], body_reads
