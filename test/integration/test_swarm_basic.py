"""Swarm basics: a few daemons and one scheduler share one blob, the registry
is read once; the piece server's endpoints; falling back to origin when the
scheduler cannot be reached."""

from __future__ import annotations

import concurrent.futures as cf
import socket
import time

import shoal_harness as h


def start_swarm(registry, scheduler_factory, shoald_factory, n, extra=None):
    sched = scheduler_factory()
    daemons = [shoald_factory(name=f"shoald{i}", insecure=[registry.hostport],
                              default_registry=registry.hostport,
                              extra_args=h.swarm_args(sched, extra))
               for i in range(n)]
    return sched, daemons


def get_all(daemons, repo, digest, timeout=300):
    with cf.ThreadPoolExecutor(len(daemons)) as ex:
        futs = [ex.submit(d.get_blob, repo, digest, None, None, timeout) for d in daemons]
        return [f.result(timeout=timeout + 10) for f in futs]


def test_three_daemons_read_the_registry_once(registry, scheduler_factory, shoald_factory,
                                              test_dir):
    size = 64 * h.MiB
    digest, _ = registry.push_random_blob("models/a", size, test_dir)
    mark = registry.log_mark()
    _, daemons = start_swarm(registry, scheduler_factory, shoald_factory, 3)
    t0 = time.monotonic()
    results = get_all(daemons, "models/a", digest)
    took = time.monotonic() - t0
    for d, r in zip(daemons, results):
        assert r.status == 200 and r.complete, (d.name, r.error, d.log_tail())
        assert r.digest == digest, d.name
    registry.settle()
    origin = registry.blob_body_bytes(digest, since=mark)
    peer = [h.peer_bytes(d) for d in daemons]
    print(f"3 daemons, {size >> 20} MiB: {took:.1f} s, registry {origin / size:.3f}x, "
          f"peer bytes {[int(p) >> 20 for p in peer]} MiB")
    assert origin <= 1.01 * size, f"registry served {origin} bytes for a {size}-byte blob"
    # everyone but the source got (almost) everything from peers
    assert sum(1 for p in peer if p >= 0.9 * size) >= 2, peer
    # graceful shutdown (LeaveHost, streams closed) exits 0
    for d in daemons:
        assert d.stop() == 0, d.name


def test_piece_server_endpoints(registry, scheduler_factory, shoald_factory, test_dir):
    size = 10 * h.MiB + 123  # 3 pieces of 4 MiB, the last one short
    digest, path = registry.push_random_blob("models/b", size, test_dir)
    data = path.read_bytes()
    _, (d,) = start_swarm(registry, scheduler_factory, shoald_factory, 1)
    hexid = digest.split(":")[1]
    peer = ("127.0.0.1", d.peer_port)
    # unknown task: 404 on both endpoints; malformed ids: 400 before any lookup
    assert h.http_request(*peer, "GET", f"/v1/tasks/{'0' * 64}/pieces/0").status == 404
    assert h.http_request(*peer, "GET", f"/v1/tasks/{'0' * 64}/bitmap").status == 404
    for bad in ["../../etc/passwd", "A" * 64, "0" * 63, hexid + "0"]:
        assert h.http_request(*peer, "GET", f"/v1/tasks/{bad}/pieces/0").status in (400, 404)
        assert h.http_request(*peer, "GET", f"/v1/tasks/{bad}/bitmap").status == 400 \
            or "/" in bad
    assert h.http_request(*peer, "GET", f"/v1/tasks/{hexid}/pieces/x").status in (400, 404)
    r = d.get_blob("models/b", digest)
    assert r.digest == digest and r.complete
    # served from the cache from now on (the version below stays put)
    h.wait_until(lambda: d.metric("shoal_tasks_active") == 0, 10, what="the task sealed")
    bm = h.http_request(*peer, "GET", f"/v1/tasks/{hexid}/bitmap")
    assert bm.status == 200
    assert bm.body == bytes([0b111]), bm.body
    # a complete task's version is its piece count
    version = int(bm.header("X-Shoal-Bitmap-Version"))
    assert version == 3
    assert bm.header("X-Shoal-Receiving") is None  # nothing is being received
    assert int(bm.header("X-Shoal-Uploads")) == 0
    # A child that stops reading keeps its piece upload, and its slot, open:
    # the bitmap reports it (children ask the least busy holder first).
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(peer)
    slow.sendall(f"GET /v1/tasks/{hexid}/pieces/0 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert slow.recv(64).startswith(b"HTTP/1.1 200")
    busy = h.http_request(*peer, "GET", f"/v1/tasks/{hexid}/bitmap")
    assert int(busy.header("X-Shoal-Uploads")) == 1, busy.headers
    slow.close()
    uploads = lambda: int(h.http_request(*peer, "GET", f"/v1/tasks/{hexid}/bitmap")
                          .header("X-Shoal-Uploads"))
    h.wait_until(lambda: uploads() == 0, 10, what="the closed upload's slot freed")
    piece = 4 * h.MiB
    for n in range(3):
        p = h.http_request(*peer, "GET", f"/v1/tasks/{hexid}/pieces/{n}")
        assert p.status == 200
        assert p.body == data[n * piece:(n + 1) * piece], n
    assert h.http_request(*peer, "GET", f"/v1/tasks/{hexid}/pieces/3").status == 404
    # a long-poll with the current version waits (here: until its deadline)
    t0 = time.monotonic()
    lp = h.http_request(*peer, "GET", f"/v1/tasks/{hexid}/bitmap?after={version}", timeout=30)
    assert lp.status == 200 and time.monotonic() - t0 > 15
    assert d.metric("shoal_upload_bytes_total") >= size


def test_unreachable_scheduler_falls_back_to_origin(registry, shoald_factory, test_dir):
    size = 9 * h.MiB
    digest, _ = registry.push_random_blob("models/c", size, test_dir)
    dead = f"127.0.0.1:{h.free_port()}"
    d = shoald_factory(insecure=[registry.hostport], default_registry=registry.hostport,
                       extra_args=["--scheduler", dead])
    r = d.get_blob("models/c", digest, timeout=60)
    assert r.status == 200 and r.complete and r.digest == digest, (r.error, d.log_tail())
    strict = shoald_factory(name="strict", insecure=[registry.hostport],
                            default_registry=registry.hostport,
                            extra_args=["--scheduler", dead, "--no-back-to-source"])
    mark = registry.log_mark()
    r = strict.get_blob("models/c", digest, timeout=60)
    assert not (r.complete and r.digest == digest), "served without scheduler or origin"
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) == 0


def test_lying_parent_is_blocked(registry, scheduler_factory, shoald_factory, proxy_factory,
                                 test_dir):
    """A parent whose piece server sends corrupted bytes: the child verifies
    against the scheduler's digests, drops them, blocks that parent and gets
    the right blob from the honest one."""
    size = 48 * h.MiB
    digest, _ = registry.push_random_blob("models/liar", size, test_dir)
    mark = registry.log_mark()
    sched = scheduler_factory()
    common = dict(insecure=[registry.hostport], default_registry=registry.hostport)
    honest = shoald_factory(name="honest", extra_args=h.swarm_args(sched), **common)
    assert honest.get_blob("models/liar", digest).digest == digest
    liar = shoald_factory(name="liar", start=False, **common)
    proxy = proxy_factory("127.0.0.1", liar.peer_port)
    proxy.corrupt_pieces = True
    liar.extra_args = h.swarm_args(sched, ["--advertise-addr", proxy.hostport])
    liar.start()
    assert liar.get_blob("models/liar", digest).digest == digest  # from the honest one
    child = shoald_factory(name="child", extra_args=h.swarm_args(sched), **common)
    r = child.get_blob("models/liar", digest, timeout=120)
    assert r.status == 200 and r.complete and r.digest == digest, (r.error, child.log_tail())
    m = child.metrics()
    assert proxy.corrupted_responses >= 1, "the child never asked the lying parent"
    assert h.metric_with_labels(m, "shoal_piece_failures_total", reason="digest_mismatch") >= 1
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) <= 1.01 * size


def test_corrupt_origin_is_caught_by_the_swarm(registry, scheduler_factory, shoald_factory,
                                               proxy_factory, test_dir):
    """The registry (behind a proxy) sends one flipped byte: the whole-blob
    digest, computed as the held prefix grows rather than after the last
    piece, does not match, so no client receives the blob complete and nothing
    is cached; once the origin is healthy the swarm serves it."""
    size = 40 * h.MiB + 123
    digest, _ = registry.push_random_blob("models/bad", size, test_dir)
    proxy = proxy_factory("127.0.0.1", registry.port)
    proxy.corrupt = True
    proxy.digests = {digest}
    sched = scheduler_factory()
    daemons = [shoald_factory(name=f"d{i}", insecure=[proxy.hostport],
                              default_registry=proxy.hostport, extra_args=h.swarm_args(sched))
               for i in range(2)]
    with cf.ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda d: d.get_blob("models/bad", digest, timeout=120), daemons))
    for d, r in zip(daemons, results):
        assert not (r.status == 200 and r.complete), f"{d.name} got a corrupt blob in full"
        assert r.digest != digest
    assert sum(d.metric("shoal_digest_mismatch_total") for d in daemons) >= 1
    proxy.corrupt = False
    r = daemons[0].get_blob("models/bad", digest, timeout=120)
    assert r.status == 200 and r.complete and r.digest == digest, (r.error, daemons[0].log_tail())
    r = daemons[1].get_blob("models/bad", digest, timeout=120)
    assert r.status == 200 and r.complete and r.digest == digest, (r.error, daemons[1].log_tail())
    for d in daemons:
        assert d.healthy()


def verifications(d, how):
    return h.metric_with_labels(d.metrics(), "shoal_blob_verifications_total", how=how)


def test_whole_blob_check_by_sealed_list_or_by_hash(registry, scheduler_factory, shoald_factory,
                                                    test_dir):
    """A child whose every piece came from parents and matched a sealed
    digest list skips the second SHA-256 pass over the blob; the source, and a
    child that resumed pieces from its disk after a crash, hash the blob."""
    size = 64 * h.MiB
    digest, _ = registry.push_random_blob("models/seal", size, test_dir)
    sched = scheduler_factory()
    common = dict(insecure=[registry.hostport], default_registry=registry.hostport)
    # the parent uploads slowly so the child can be killed halfway
    a = shoald_factory(name="a", extra_args=h.swarm_args(sched, ["--upload-rate-limit", "16MiB"]),
                       **common)
    assert a.get_blob("models/seal", digest).digest == digest
    assert verifications(a, "hashed") == 1 and verifications(a, "sealed_list") == 0
    time.sleep(0.5)  # A's SourceFinished seals the list at the scheduler

    b = shoald_factory(name="b", extra_args=h.swarm_args(sched), **common)
    r = b.get_blob("models/seal", digest)
    assert r.status == 200 and r.complete and r.digest == digest, (r.error, b.log_tail())
    assert h.peer_bytes(b) == size
    assert verifications(b, "sealed_list") == 1 and verifications(b, "hashed") == 0

    b.stop()  # c's only parent is the slow one
    c = shoald_factory(name="c", extra_args=h.swarm_args(sched), **common)
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(c.get_blob, "models/seal", digest, None, None, 120)
        deadline = time.monotonic() + 60
        while h.peer_bytes(c) < 0.3 * size and time.monotonic() < deadline:
            time.sleep(0.05)
        assert h.peer_bytes(c) >= 0.3 * size, "c did not get pieces from its parents"
        time.sleep(1.0)  # the group commit records the pieces written so far
        c.kill9()
        try:
            fut.result(timeout=60)  # the connection broke
        except OSError:
            pass
    c.start()
    r = c.get_blob("models/seal", digest, timeout=120)
    assert r.status == 200 and r.complete and r.digest == digest, (r.error, c.log_tail())
    assert 0 < h.peer_bytes(c) < size, "c should have resumed pieces from its disk"
    assert verifications(c, "hashed") == 1 and verifications(c, "sealed_list") == 0


def test_a_child_leaves_the_whole_blob_hash_to_the_seal(registry, scheduler_factory,
                                                        shoald_factory, test_dir):
    """A child downloading while the source reads origin does not hash the
    blob whole as its pieces arrive (it did, on top of each piece's own
    check): the source seals the digest list when it finishes, before the
    child does, and the child is verified by the list."""
    size = 64 * h.MiB
    digest, _ = registry.push_random_blob("models/defer", size, test_dir)
    sched = scheduler_factory()
    common = dict(insecure=[registry.hostport], default_registry=registry.hostport)
    # the source's uploads are slow: the child finishes well after the source
    a = shoald_factory(name="a", extra_args=h.swarm_args(sched, ["--upload-rate-limit", "16MiB"]),
                       **common)
    b = shoald_factory(name="b", extra_args=h.swarm_args(sched), **common)
    with cf.ThreadPoolExecutor(2) as ex:
        fa = ex.submit(a.get_blob, "models/defer", digest, None, None, 120)
        deadline = time.monotonic() + 30
        while a.metric("shoal_source_bytes_total") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        fb = ex.submit(b.get_blob, "models/defer", digest, None, None, 120)
        ra, rb = fa.result(timeout=130), fb.result(timeout=130)
    assert ra.digest == digest and rb.digest == digest, (ra.error, rb.error, b.log_tail())
    assert h.peer_bytes(b) == size, "b should have taken every piece from a"
    assert verifications(a, "hashed") == 1
    assert a.metric("shoal_blob_hash_bytes_total") == size
    assert verifications(b, "sealed_list") == 1 and verifications(b, "hashed") == 0
    assert b.metric("shoal_blob_hash_bytes_total") == 0


def first_asks_second_reads(registry, test_dir, sched, shoald_factory, repo, first_args,
                            second_args):
    """`first` asks for a blob, `second` a second later; returns both daemons
    after checking both got it and which one read origin (returned)."""
    size = 16 * h.MiB
    digest, _ = registry.push_random_blob(repo, size, test_dir)
    common = dict(insecure=[registry.hostport], default_registry=registry.hostport)
    first = shoald_factory(name="first", extra_args=h.swarm_args(sched, first_args), **common)
    second = shoald_factory(name="second", extra_args=h.swarm_args(sched, second_args), **common)
    with cf.ThreadPoolExecutor(2) as ex:
        f1 = ex.submit(first.get_blob, repo, digest, None, None, 60)
        time.sleep(1.0)  # first registered and waits for the election
        assert first.metric("shoal_source_bytes_total") == 0
        f2 = ex.submit(second.get_blob, repo, digest, None, None, 60)
        r1, r2 = f1.result(timeout=70), f2.result(timeout=70)
    assert r1.digest == digest and r2.digest == digest, (r1.error, r2.error)
    return first, second, size


def test_the_source_is_elected_in_the_origin_zone(registry, scheduler_factory, shoald_factory,
                                                  test_dir):
    """With --origin-zone, a task's source is a peer of that zone, even when a
    peer of another zone asked first: the scheduler waits for one (up to
    --election-window), and without one elects the other zone's peer."""
    sched = scheduler_factory(extra_args=["--origin-zone", "a", "--election-window", "3"])
    far, near, size = first_asks_second_reads(registry, test_dir, sched, shoald_factory,
                                              "models/zone", ["--zone", "b"], ["--zone", "a"])
    assert near.metric("shoal_source_bytes_total") == size
    assert far.metric("shoal_source_bytes_total") == 0 and h.peer_bytes(far) == size

    # A second blob only the far zone asks for: elected once the window passed.
    digest2, _ = registry.push_random_blob("models/zone", 4 * h.MiB, test_dir)
    t0 = time.monotonic()
    r = far.get_blob("models/zone", digest2, timeout=60)
    took = time.monotonic() - t0
    assert r.status == 200 and r.digest == digest2, (r.error, far.log_tail())
    assert far.metric("shoal_source_bytes_total") == 4 * h.MiB
    assert 3.0 <= took < 10, f"took {took:.1f}s with a 3 s election window"


def test_the_source_is_the_fastest_announced_host(registry, scheduler_factory, shoald_factory,
                                                  test_dir):
    """shoald --link-rate reaches the scheduler, which elects the faster host's
    peer as the source although the slower one asked first."""
    sched = scheduler_factory(extra_args=["--election-window", "3"])
    slow, fast, size = first_asks_second_reads(registry, test_dir, sched, shoald_factory,
                                               "models/fast", ["--link-rate", "10MiB"],
                                               ["--link-rate", "1GiB"])
    assert fast.metric("shoal_source_bytes_total") == size
    assert slow.metric("shoal_source_bytes_total") == 0 and h.peer_bytes(slow) == size


def test_a_finished_source_sends_any_piece_to_anyone(registry, scheduler_factory,
                                                     shoald_factory, test_dir):
    """The first-copy rule (each piece once, 409 for a second request) keeps a
    source's uplink for new bytes while it reads origin; once it holds every
    piece there are none left, and the children catching up take from it like
    from any other parent (8 nodes in bench/swarm: 23.45 s against 24.26 s
    with the rule kept to the end). test_swarm_upload_limit.py sees the 409s
    of a source still reading."""
    size = 8 * h.MiB
    digest, _ = registry.push_random_blob("models/first", size, test_dir)
    _, (d,) = start_swarm(registry, scheduler_factory, shoald_factory, 1)
    assert d.get_blob("models/first", digest).digest == digest
    assert d.metric("shoal_source_bytes_total") == size  # it was the source
    peer = ("127.0.0.1", d.peer_port)
    path = f"/v1/tasks/{digest.split(':')[1]}/pieces/0"
    for _ in range(3):
        r = h.http_request(*peer, "GET", path)
        assert r.status == 200 and len(r.body) == 4 * h.MiB, r.status


def test_upload_slots_cap_concurrent_sends(registry, scheduler_factory, shoald_factory, test_dir):
    """--upload-slots N: N pieces are sent at once, the next request gets 503
    at once (the child asks another parent), and a freed slot serves again.
    Few slots are what make a swarm fast: a piece crosses a parent's uplink
    sooner when fewer share it (bench/README.md)."""
    size = 3 * 4 * h.MiB
    digest, _ = registry.push_random_blob("models/slots", size, test_dir)
    _, (d,) = start_swarm(registry, scheduler_factory, shoald_factory, 1,
                          ["--upload-slots", "2", "--upload-rate-limit", "2MiB"])
    assert d.get_blob("models/slots", digest).digest == digest
    assert d.metric("shoal_upload_slots") == 2
    peer = ("127.0.0.1", d.peer_port)
    path = f"/v1/tasks/{digest.split(':')[1]}/pieces/"
    with cf.ThreadPoolExecutor(2) as ex:
        # two 4 MiB sends at 2 MiB/s between them: about 4 s
        sends = [ex.submit(h.http_request, *peer, "GET", path + str(n)) for n in (0, 1)]
        deadline = time.monotonic() + 10
        while d.metric("shoal_upload_slots_in_use") < 2:
            assert time.monotonic() < deadline, "the two sends never held both slots"
            time.sleep(0.05)
        t0 = time.monotonic()
        busy = h.http_request(*peer, "GET", path + "2")
        assert busy.status == 503 and b"all upload slots busy" in busy.body, busy.status
        assert time.monotonic() - t0 < 1.0, "a full server must answer at once, not queue"
        assert all(f.result(timeout=30).status == 200 for f in sends)
    assert d.metric("shoal_upload_slots_in_use") == 0
    assert h.http_request(*peer, "GET", path + "2").status == 200
