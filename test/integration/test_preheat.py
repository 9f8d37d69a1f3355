"""shoalctl preheat: the scheduler has the seed hosts fetch every blob of a
pushed model; afterwards nodes pull it without the registry serving any
blob body. Without a seed online, preheat fails at once with a clear error."""

from __future__ import annotations

import concurrent.futures as cf
import json

import shoal_harness as h

WEIGHT = 64 * h.MiB


def push_model(registry, test_dir, repo="models/pre", tag="v1") -> tuple[str, dict]:
    src = test_dir / "model"
    h.build_model_dir(src, WEIGHT)
    ref = f"{registry.hostport}/{repo}:{tag}"
    h.shoalctl(["push", "--plain-http", "--state-dir", "none", "-q", str(src), ref],
               test_dir / "push.log")
    r = h.http_request("127.0.0.1", registry.port, "GET", f"/v2/{repo}/manifests/{tag}",
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status == 200
    return ref, json.loads(r.body)


def blobs_of(manifest: dict) -> list[tuple[str, int]]:
    return [(manifest["config"]["digest"], manifest["config"]["size"])] + \
        [(l["digest"], l["size"]) for l in manifest["layers"]]


def test_preheat_then_pull_reads_no_blob_body_from_the_registry(
        registry, scheduler_factory, shoald_factory, test_dir):
    ref, manifest = push_model(registry, test_dir)
    blobs = blobs_of(manifest)
    total = sum(s for _, s in blobs)
    sched = scheduler_factory(extra_args=["--announce-interval", "1", "--host-ttl", "10"])
    common = dict(insecure=[registry.hostport], default_registry=registry.hostport)
    seed = shoald_factory(name="seed", extra_args=h.swarm_args(sched, ["--seed"]), **common)
    nodes = [shoald_factory(name=f"node{i}", extra_args=h.swarm_args(sched), **common)
             for i in range(2)]

    mark = registry.log_mark()
    out = h.shoalctl(["preheat", "--scheduler", sched.addr, "--timeout", "300", ref],
                     test_dir / "preheat.log")
    assert " succeeded: " in out.stdout, out.stdout[-3000:]
    assert f"({len(blobs)} blobs" in out.stdout
    registry.settle()
    # The seed read every blob once.
    for d, size in blobs:
        got = registry.blob_body_bytes(d, since=mark)
        assert size <= got <= 1.01 * size + 4096, (d, size, got)

    # Now the nodes pull every blob at once: all from the seed, none from the registry.
    mark2 = registry.log_mark()
    with cf.ThreadPoolExecutor(8) as ex:
        futs = {(n.name, d): ex.submit(n.get_blob, "models/pre", d, None, None, 300)
                for n in nodes for d, _ in blobs}
        for key, f in futs.items():
            r = f.result(timeout=320)
            assert r.status == 200 and r.complete and r.digest == key[1], (key, r.error)
    registry.settle()
    body_reads = [r for r in registry.requests(mark2)
                  if r.method == "GET" and r.blob_digest() and r.written > 0]
    assert body_reads == [], body_reads
    for n in nodes:
        assert h.peer_bytes(n) >= 0.99 * total, (n.name, h.peer_bytes(n), total)
    assert seed.metric("shoal_source_bytes_total") >= total


def test_preheat_without_a_seed_fails_with_a_clear_error(registry, scheduler_factory,
                                                          shoald_factory, test_dir):
    ref, _ = push_model(registry, test_dir)
    sched = scheduler_factory(extra_args=["--announce-interval", "1", "--host-ttl", "10"])
    shoald_factory(name="node", insecure=[registry.hostport],
                   extra_args=h.swarm_args(sched))
    out = h.shoalctl(["preheat", "--scheduler", sched.addr, ref], test_dir / "preheat.log",
                     check=False)
    assert out.returncode == 1
    assert "no seed host is online" in out.stdout and "--seed" in out.stdout, out.stdout


def test_preheat_of_a_missing_tag_fails_and_names_it(registry, scheduler_factory,
                                                     shoald_factory, test_dir):
    sched = scheduler_factory(extra_args=["--announce-interval", "1", "--host-ttl", "10"])
    shoald_factory(name="seed", insecure=[registry.hostport],
                   extra_args=h.swarm_args(sched, ["--seed"]))
    # a tick for the seed's first heartbeat to reach the scheduler
    h.wait_until(lambda: b"seed=true" in (sched.workdir / "scheduler.1.log").read_bytes(), 10)
    out = h.shoalctl(["preheat", "--scheduler", sched.addr, "--timeout", "60",
                      f"{registry.hostport}/models/none:v404"], test_dir / "preheat.log",
                     check=False)
    assert out.returncode == 1, out.stdout
    assert "failed" in out.stdout and "404" in out.stdout and "models/none" in out.stdout, \
        out.stdout
