"""How a child verifies a blob it got from a parent: every piece against the
scheduler's digest, and the whole blob either hashed or — when every piece
matched a sealed digest list — taken as verified by the copy that sealed it
(daemon/transfer/README.md). Counted by shoal_blob_verifications_total{how}."""

from __future__ import annotations

import time

import shoal_harness as h


def verifications(d: h.Shoald, how: str) -> float:
    return h.metric_with_labels(d.metrics(), "shoal_blob_verifications_total", how=how)


def test_child_of_a_sealed_blob_skips_the_whole_blob_pass(registry, scheduler_factory,
                                                          shoald_factory, test_dir):
    size = 48 * h.MiB + 4321
    digest, _ = registry.push_random_blob("models/v", size, test_dir)
    sched = scheduler_factory()
    common = dict(insecure=[registry.hostport], default_registry=registry.hostport,
                  extra_args=h.swarm_args(sched))
    a = shoald_factory(name="a", **common)
    b = shoald_factory(name="b", **common)
    r = a.get_blob("models/v", digest)
    assert r.complete and r.digest == digest, (r.error, a.log_tail())
    # the source hashes the whole blob itself: it is what seals the digest list
    h.wait_until(lambda: verifications(a, "hashed") == 1, 10, what="the source's whole-blob hash")
    assert verifications(a, "sealed_list") == 0
    time.sleep(0.5)  # SourceFinished reaches the scheduler
    mark = registry.log_mark()
    r = b.get_blob("models/v", digest)
    assert r.complete and r.digest == digest, (r.error, b.log_tail())
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) == 0
    assert h.peer_bytes(b) == size
    # every piece matched the sealed list: no second pass over the blob
    h.wait_until(lambda: verifications(b, "sealed_list") == 1, 10, what="B verified by the sealed list")
    assert verifications(b, "hashed") == 0
    # and what B serves from its cache is the blob
    r = b.get_blob("models/v", digest)
    assert r.complete and r.digest == digest


def test_children_while_the_source_reads_verify_every_blob(registry, scheduler_factory,
                                                           shoald_factory, test_dir):
    """Children finishing around the seal: each blob is verified once, either
    way, and every copy is right."""
    size = 64 * h.MiB
    digest, _ = registry.push_random_blob("models/w", size, test_dir)
    sched = scheduler_factory()
    common = dict(insecure=[registry.hostport], default_registry=registry.hostport,
                  extra_args=h.swarm_args(sched))
    ds = [shoald_factory(name=f"d{i}", **common) for i in range(3)]
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda d: d.get_blob("models/w", digest), ds))
    for d, r in zip(ds, results):
        assert r.complete and r.digest == digest, (d.name, r.error, d.log_tail())
    for d in ds:
        h.wait_until(lambda: verifications(d, "hashed") + verifications(d, "sealed_list") == 1, 10,
                     what=f"{d.name}'s one verification")
    # the source (the one that read the registry) always hashed
    assert sum(verifications(d, "hashed") for d in ds) >= 1
