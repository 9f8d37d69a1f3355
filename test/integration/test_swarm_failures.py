"""The swarm survives losing its source, a parent, or the scheduler mid-transfer:
every daemon still gets the right bytes and the registry body is read about once."""

from __future__ import annotations

import concurrent.futures as cf
import time

import shoal_harness as h

SIZE = 256 * h.MiB
RATE = "48MiB"  # per daemon (origin and peers): a transfer takes a few seconds
REPO = "models/failures"


def swarm(registry, scheduler_factory, shoald_factory, n, extra=()):
    sched = scheduler_factory()
    daemons = [shoald_factory(name=f"shoald{i}", insecure=[registry.hostport],
                              default_registry=registry.hostport,
                              extra_args=h.swarm_args(sched, ["--download-rate-limit", RATE,
                                                              *extra]))
               for i in range(n)]
    return sched, daemons


def pull_all(daemons, digest):
    ex = cf.ThreadPoolExecutor(len(daemons))
    futs = {d.name: ex.submit(d.get_blob, REPO, digest, None, None, 300) for d in daemons}
    return ex, futs


def metric(d, name):
    try:
        return d.metric(name)
    except OSError:
        return 0.0


def wait_for_source(daemons, fraction, timeout=60):
    """The daemon reading origin, once it read `fraction` of the blob."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in daemons:
            if metric(d, "shoal_source_bytes_total") >= fraction * SIZE:
                return d
        time.sleep(0.05)
    raise AssertionError("no daemon read origin")


def check_results(futs, survivors, digest):
    for d in survivors:
        r = futs[d.name].result(timeout=320)
        assert r.status == 200 and r.complete, (d.name, r.error, d.log_tail())
        assert r.digest == digest, d.name


def test_source_killed_at_30_percent(registry, scheduler_factory, shoald_factory, test_dir):
    digest, _ = registry.push_random_blob(REPO, SIZE, test_dir)
    mark = registry.log_mark()
    _, daemons = swarm(registry, scheduler_factory, shoald_factory, 4)
    ex, futs = pull_all(daemons, digest)
    try:
        source = wait_for_source(daemons, 0.3)
        source.kill9()
        survivors = [d for d in daemons if d is not source]
        check_results(futs, survivors, digest)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    registry.settle()
    origin = registry.blob_body_bytes(digest, since=mark)
    print(f"\nsource {source.name} killed at 30%: registry {origin / SIZE:.3f}x")
    # What a dead source costs: the pieces only it held (read from origin, not
    # yet delivered to anyone) are read again by the next source. A source
    # reads at most swarm_options::source_lead (4) pieces ahead of what it
    # delivered while others ask it for pieces: 1.05-1.08x measured (1.06x
    # with 3, 1.094x with 5; 1.09-1.19x before that cap, when a source sent
    # each piece once and read ahead freely).
    assert origin <= 1.1 * SIZE, f"registry served {origin / SIZE:.3f}x the blob"


def test_parent_killed_mid_transfer(registry, scheduler_factory, shoald_factory, test_dir):
    digest, _ = registry.push_random_blob(REPO, SIZE, test_dir)
    mark = registry.log_mark()
    _, daemons = swarm(registry, scheduler_factory, shoald_factory, 5)
    ex, futs = pull_all(daemons, digest)
    try:
        source = wait_for_source(daemons, 0.05)
        # a non-source daemon that is serving others
        deadline = time.monotonic() + 60
        parent = None
        while parent is None and time.monotonic() < deadline:
            for d in daemons:
                if d is not source and metric(d, "shoal_upload_bytes_total") >= 0.1 * SIZE:
                    parent = d
                    break
            time.sleep(0.05)
        assert parent is not None, "no child served pieces to others"
        parent.kill9()
        survivors = [d for d in daemons if d is not parent]
        check_results(futs, survivors, digest)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    registry.settle()
    origin = registry.blob_body_bytes(digest, since=mark)
    print(f"\nparent {parent.name} killed: registry {origin / SIZE:.3f}x")
    assert origin <= 1.1 * SIZE


def test_scheduler_restarted_mid_transfer(registry, scheduler_factory, shoald_factory,
                                          test_dir):
    digest, _ = registry.push_random_blob(REPO, SIZE, test_dir)
    mark = registry.log_mark()
    sched, daemons = swarm(registry, scheduler_factory, shoald_factory, 4)
    ex, futs = pull_all(daemons, digest)
    try:
        wait_for_source(daemons, 0.3)
        sched.kill9()
        time.sleep(1.0)
        sched.start()
        check_results(futs, daemons, digest)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    registry.settle()
    origin = registry.blob_body_bytes(digest, since=mark)
    print(f"\nscheduler restarted: registry {origin / SIZE:.3f}x, peer bytes "
          f"{[int(h.peer_bytes(d)) >> 20 for d in daemons]} MiB")
    assert origin <= 1.1 * SIZE
    # the daemons re-registered with the new scheduler and are serving as parents
    m = sched.metrics()
    assert m.get("shoal_scheduler_peers", 0) >= 1
