"""Ten clients GET one uncached 256 MiB blob at once: every client gets the
right bytes, and the registry sends the body once."""

import threading

import shoal_harness as h

SIZE = 256 * h.MiB
CLIENTS = 10


def test_ten_clients_one_origin_read(registry, shoald_factory, test_dir):
    digest, _ = registry.push_random_blob("blobs/big", SIZE, test_dir)
    shoald = shoald_factory(insecure=[registry.hostport])
    mark = registry.log_mark()

    barrier = threading.Barrier(CLIENTS)
    results: list = [None] * CLIENTS

    def client(i):
        barrier.wait()
        results[i] = shoald.get_blob("blobs/big", digest, ns=registry.hostport, timeout=600)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    for i, r in enumerate(results):
        assert r is not None, f"client {i} did not finish"
        assert r.status == 200, f"client {i}: status {r.status} {r.error}"
        assert r.complete and r.length == SIZE, f"client {i}: {r.length} bytes, {r.error}"
        assert r.digest == digest, f"client {i}: wrong sha256"

    registry.settle()
    read = registry.blob_body_bytes(digest, since=mark)
    gets = registry.blob_gets(digest, since=mark)
    assert SIZE <= read <= SIZE * 1.01, \
        f"registry wrote {read} body bytes ({read / SIZE:.3f}x) in {len(gets)} GETs"
    assert shoald.healthy()
    assert shoald.stop() == 0


def test_late_joiner_and_early_leaver(registry, shoald_factory, test_dir):
    """A client that hangs up early does not stop the download for others; a
    client that joins mid-download gets the whole blob; one origin read."""
    size = 128 * h.MiB
    digest, _ = registry.push_random_blob("blobs/mid", size, test_dir)
    shoald = shoald_factory(insecure=[registry.hostport],
                            extra_args=["--download-rate-limit", "64MiB"])
    mark = registry.log_mark()
    path = h.blob_path("blobs/mid", digest, registry.hostport)

    # early leaver: reads 1 MiB, then closes the connection
    leaver = h.http.client.HTTPConnection("127.0.0.1", shoald.mirror_port, timeout=60)
    leaver.request("GET", path)
    resp = leaver.getresponse()
    assert resp.status == 200
    assert len(resp.read(1 * h.MiB)) == 1 * h.MiB
    leaver.close()

    results = {}
    first = threading.Thread(target=lambda: results.setdefault(
        "first", shoald.get_blob("blobs/mid", digest, ns=registry.hostport, timeout=300)))
    first.start()
    h.wait_until(lambda: shoald.metric("shoal_source_bytes_total") >= size * 0.4, 60,
                 what="40% read from origin")
    late = shoald.get_blob("blobs/mid", digest, ns=registry.hostport, timeout=300)
    first.join(300)
    for name, r in (("first", results.get("first")), ("late", late)):
        assert r is not None and r.status == 200, name
        assert r.complete and r.length == size and r.digest == digest, f"{name}: {r.error}"
    registry.settle()
    read = registry.blob_body_bytes(digest, since=mark)
    assert size <= read <= size * 1.01, f"registry wrote {read / size:.3f}x the size"
    assert shoald.stop() == 0
