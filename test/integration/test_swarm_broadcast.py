"""Eight daemons pull the same large blob at once through their own mirrors:
everyone gets the right bytes, the registry serves the body once, and most
daemons get nearly everything from peers."""

from __future__ import annotations

import concurrent.futures as cf
import time

import shoal_harness as h

SIZE = 512 * h.MiB
N = 8


def test_eight_daemons_one_registry_read(registry, scheduler_factory, shoald_factory, test_dir):
    digest, _ = registry.push_random_blob("models/big", SIZE, test_dir)
    mark = registry.log_mark()
    sched = scheduler_factory()
    daemons = [shoald_factory(name=f"shoald{i}", insecure=[registry.hostport],
                              default_registry=registry.hostport,
                              extra_args=h.swarm_args(sched))
               for i in range(N)]
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(N) as ex:
        futs = [ex.submit(d.get_blob, "models/big", digest, None, None, 600) for d in daemons]
        results = [f.result(timeout=700) for f in futs]
    took = time.monotonic() - t0
    for d, r in zip(daemons, results):
        assert r.status == 200 and r.complete, (d.name, r.error, d.log_tail())
        assert r.digest == digest, d.name
    registry.settle()
    origin = registry.blob_body_bytes(digest, since=mark)
    fractions = [h.peer_bytes(d) / SIZE for d in daemons]
    print(f"\n{N} daemons x {SIZE >> 20} MiB: {took:.1f} s, registry body bytes "
          f"{origin / SIZE:.3f}x, peer fractions {[round(f, 2) for f in fractions]}")
    assert origin <= 1.01 * SIZE, f"registry served {origin} bytes for a {SIZE}-byte blob"
    assert sum(1 for f in fractions if f >= 0.9) >= 6, fractions
    # the cache is complete on every node: a second GET does not touch the registry
    mark = registry.log_mark()
    again = daemons[-1].get_blob("models/big", digest)
    assert again.digest == digest
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) == 0
