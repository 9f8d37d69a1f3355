"""Pieces relayed as they arrive (cut-through, daemon/transfer/partial_piece.h):
a daemon's piece server sends a piece it is still receiving, byte for byte as
it lands, and its /bitmap answer lists such pieces in X-Shoal-Receiving; a
relay whose own download fails ends short, and a swarm of daemons that relay
to each other still reads the registry once and delivers the right bytes."""

from __future__ import annotations

import concurrent.futures as cf
import time

import shoal_harness as h

PIECE = 4 * h.MiB


def slow_source(registry, scheduler_factory, shoald_factory, rate: str):
    """One daemon in a swarm whose origin reads run at `rate`."""
    sched = scheduler_factory()
    d = shoald_factory(name="source", insecure=[registry.hostport],
                       default_registry=registry.hostport,
                       extra_args=h.swarm_args(sched, ["--download-rate-limit", rate]))
    return sched, d


def bitmap(d, hexid):
    return h.http_request("127.0.0.1", d.peer_port, "GET", f"/v1/tasks/{hexid}/bitmap")


def wait_receiving(d, hexid, timeout=30.0) -> int:
    """A piece the daemon lists as being received (and does not hold yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = bitmap(d, hexid)
        if r.status == 200 and r.header("X-Shoal-Receiving"):
            pieces = [int(x) for x in r.header("X-Shoal-Receiving").split(",")]
            held = [n for n in pieces if r.body[n // 8] >> (n % 8) & 1]
            assert not held, f"pieces {held} are both held and listed as being received"
            return pieces[0]
        time.sleep(0.02)
    raise AssertionError(f"{d.name} listed no piece being received\n{d.log_tail()}")


def test_a_piece_is_relayed_while_it_arrives(registry, scheduler_factory, shoald_factory,
                                             test_dir):
    size = 2 * PIECE + 5  # the last piece is 5 bytes
    digest, path = registry.push_random_blob("models/relay", size, test_dir)
    data = path.read_bytes()
    hexid = digest.split(":")[1]
    # 2 MiB/s: a piece takes 2 s to read from the registry
    _, d = slow_source(registry, scheduler_factory, shoald_factory, "2MiB")
    with cf.ThreadPoolExecutor(1) as ex:
        client = ex.submit(d.get_blob, "models/relay", digest)
        n = wait_receiving(d, hexid)
        t0 = time.monotonic()
        r = h.http_request("127.0.0.1", d.peer_port, "GET", f"/v1/tasks/{hexid}/pieces/{n}",
                           timeout=60)
        took = time.monotonic() - t0
        assert r.status == 200 and not r.incomplete, (r.status, d.log_tail())
        assert r.header("X-Shoal-Relay") == "1"
        want = data[n * PIECE:(n + 1) * PIECE]
        assert r.body == want, f"piece {n}: {len(r.body)} bytes, not the blob's"
        # it came as the registry delivered it, not at once from a whole piece
        print(f"piece {n} relayed in {took:.2f} s")
        assert took > 0.3, took
        res = client.result(timeout=120)
    assert res.complete and res.digest == digest, res.error
    assert d.metric("shoal_upload_relays_total") >= 1
    # nothing is being received any more: the header is gone
    done = bitmap(d, hexid)
    assert done.status == 200 and done.header("X-Shoal-Receiving") is None
    # a piece held whole is sent from the content file, not relayed
    whole = h.http_request("127.0.0.1", d.peer_port, "GET", f"/v1/tasks/{hexid}/pieces/0")
    assert whole.status == 200 and whole.header("X-Shoal-Relay") is None
    assert whole.body == data[:PIECE]


def test_a_relay_ends_short_when_its_download_fails(registry, scheduler_factory,
                                                   shoald_factory, proxy_factory, test_dir):
    size = 4 * PIECE
    digest, _ = registry.push_random_blob("models/relay-fail", size, test_dir)
    hexid = digest.split(":")[1]
    # The origin is a proxy that sends 1 MiB/s and then dies mid-body; paced
    # there (not by the daemon's own read limit), no piece's rest sits in socket
    # buffers to complete it after the origin is gone.
    origin = proxy_factory("127.0.0.1", registry.port)
    origin.pace = h.MiB
    sched = scheduler_factory()
    d = shoald_factory(name="source", insecure=[origin.hostport],
                       default_registry=origin.hostport, extra_args=h.swarm_args(sched))
    with cf.ThreadPoolExecutor(1) as ex:
        client = ex.submit(d.get_blob, "models/relay-fail", digest, None, None, 120)
        n = wait_receiving(d, hexid)
        with cf.ThreadPoolExecutor(1) as rx:
            relay = rx.submit(h.http_request, "127.0.0.1", d.peer_port, "GET",
                              f"/v1/tasks/{hexid}/pieces/{n}", None, None, 60)
            time.sleep(0.5)  # the relay has begun
            origin.sever()  # the source's origin read fails mid-piece
            t0 = time.monotonic()
            r = relay.result(timeout=90)
            ended = time.monotonic() - t0
        res = client.result(timeout=120)
    # the relay was cut short (never a complete piece that is not the blob's)
    assert r.status == 200 and r.header("X-Shoal-Relay") == "1"
    assert r.incomplete and len(r.body) < PIECE, (len(r.body), r.incomplete)
    assert ended < 60, f"the relay ended {ended:.1f} s after the download failed"
    assert not res.complete
    # the daemon is still up and lists nothing as being received
    assert d.healthy()
    b = bitmap(d, hexid)
    assert b.status == 404 or b.header("X-Shoal-Receiving") is None


def test_relaying_daemons_read_the_registry_once(registry, scheduler_factory, shoald_factory,
                                                 test_dir):
    size = 48 * h.MiB
    digest, _ = registry.push_random_blob("models/relay-swarm", size, test_dir)
    mark = registry.log_mark()
    sched = scheduler_factory()
    # The first reads origin at 8 MiB/s (2 s per 4 MiB piece per stream); the
    # others take pieces at loopback speed, so they ask for pieces that are
    # still arriving at their parents.
    daemons = [shoald_factory(name=f"shoald{i}", insecure=[registry.hostport],
                              default_registry=registry.hostport,
                              extra_args=h.swarm_args(
                                  sched, ["--download-rate-limit", "8MiB"] if i == 0 else []))
               for i in range(4)]
    with cf.ThreadPoolExecutor(len(daemons)) as ex:
        first = ex.submit(daemons[0].get_blob, "models/relay-swarm", digest)
        time.sleep(0.3)  # daemons[0] registers first and reads origin
        rest = [ex.submit(d.get_blob, "models/relay-swarm", digest) for d in daemons[1:]]
        results = [first.result(timeout=300)] + [f.result(timeout=300) for f in rest]
    for d, r in zip(daemons, results):
        assert r.complete and r.digest == digest, (d.name, r.error, d.log_tail())
    registry.settle()
    origin = registry.blob_body_bytes(digest, since=mark)
    assert origin <= 1.01 * size, f"registry served {origin} bytes for a {size}-byte blob"
    relays = sum(d.metric("shoal_upload_relays_total") for d in daemons)
    # every child verified what it got, relayed or not
    mismatches = sum(d.metric("shoal_digest_mismatch_total") for d in daemons)
    print(f"relayed uploads {relays:.0f}, registry {origin / size:.3f}x")
    assert relays > 0
    assert mismatches == 0
