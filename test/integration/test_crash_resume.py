"""kill -9 in the middle of a download; after a restart on the same data dir
the blob completes without reading the finished part from the registry again."""

import threading
import time

import shoal_harness as h

SIZE = 512 * h.MiB
RATE = "64MiB"


def test_kill9_mid_download_resumes(registry, shoald_factory, test_dir):
    digest, _ = registry.push_random_blob("blobs/huge", SIZE, test_dir)
    shoald = shoald_factory(insecure=[registry.hostport], extra_args=["--download-rate-limit", RATE])
    mark1 = registry.log_mark()

    first = {}
    t = threading.Thread(target=lambda: first.setdefault(
        "r", shoald.get_blob("blobs/huge", digest, ns=registry.hostport, timeout=120)))
    t.start()
    deadline = time.monotonic() + 60
    seen = 0.0
    while True:
        seen = shoald.metric("shoal_source_bytes_total")
        if seen >= SIZE * 0.5:
            break
        assert time.monotonic() < deadline, f"source bytes stuck at {seen}"
        assert shoald.alive(), shoald.log_tail()
        time.sleep(0.02)
    assert seen < SIZE * 0.9, f"rate limit not applied? {seen} of {SIZE} already read"
    shoald.kill9()
    t.join(60)
    assert "r" in first
    assert not (first["r"].complete and first["r"].digest == digest), \
        "the first client got the whole blob although shoald was killed"

    registry.settle()
    read1 = registry.blob_body_bytes(digest, since=mark1)
    mark2 = registry.log_mark()

    shoald.start()  # same data dir, same ports
    second = shoald.get_blob("blobs/huge", digest, ns=registry.hostport, timeout=300)
    assert second.status == 200, second.error
    assert second.complete and second.length == SIZE, second.error
    assert second.digest == digest

    registry.settle()
    read2 = registry.blob_body_bytes(digest, since=mark2)
    total = read1 + read2
    msg = f"before kill {read1 / SIZE:.3f}x, after restart {read2 / SIZE:.3f}x of the size"
    assert total <= SIZE * 1.1, msg
    assert read2 <= SIZE * 0.6, msg

    # a third read is served from the cache
    mark3 = registry.log_mark()
    third = shoald.get_blob("blobs/huge", digest, ns=registry.hostport)
    assert third.digest == digest
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark3) == 0
    assert shoald.stop() == 0


def test_sigterm_mid_download_exits_0_and_resumes(registry, shoald_factory, test_dir):
    size = 256 * h.MiB
    digest, _ = registry.push_random_blob("blobs/term", size, test_dir)
    shoald = shoald_factory(insecure=[registry.hostport], extra_args=["--download-rate-limit", RATE])
    first = {}
    t = threading.Thread(target=lambda: first.setdefault(
        "r", shoald.get_blob("blobs/term", digest, ns=registry.hostport, timeout=120)))
    t.start()
    h.wait_until(lambda: shoald.metric("shoal_source_bytes_total") >= size * 0.3, 60,
                 what="30% of the blob read from origin")
    rc = shoald.stop(timeout=15)
    t.join(60)
    assert rc == 0, f"SIGTERM with a download in flight: exit status {rc}"
    assert not (first["r"].complete and first["r"].digest == digest)

    registry.settle()
    mark = registry.log_mark()
    shoald.start()
    second = shoald.get_blob("blobs/term", digest, ns=registry.hostport, timeout=300)
    assert second.status == 200 and second.complete and second.digest == digest
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) <= size * 0.8
    assert registry.blob_body_bytes(digest) <= size * 1.1
    assert shoald.stop() == 0
