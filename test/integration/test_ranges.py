"""Range requests, HEAD and manifest headers through the mirror.

Pieces are 4 MiB for blobs under 2 GiB, so 4194300-4194310 crosses a piece
boundary. Ranges are checked on an uncached blob (the mirror must fetch) and
again once it is cached."""

import json

import pytest

import shoal_harness as h

PIECE = 4 * h.MiB
SIZE = 3 * PIECE + 12345  # last piece short


@pytest.fixture
def setup(registry, shoald_factory, test_dir):
    path = test_dir / "blob.bin"
    digest = h.write_random_file(path, SIZE)
    registry.push_blob_file("ranges/blob", path, digest)
    shoald = shoald_factory(insecure=[registry.hostport])
    return registry, shoald, digest, path.read_bytes()


def _check_ranges(shoald, registry, digest, data):
    p = h.blob_path("ranges/blob", digest, registry.hostport)
    cases = [
        ("bytes=4194300-4194310", 4194300, 4194310),   # across a piece boundary
        ("bytes=0-0", 0, 0),
        ("bytes=100-", 100, SIZE - 1),
        (f"bytes={SIZE - 10}-{SIZE + 1000}", SIZE - 10, SIZE - 1),  # end clamped
        (f"bytes={2 * PIECE}-{3 * PIECE - 1}", 2 * PIECE, 3 * PIECE - 1),  # one whole piece
        (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
    ]
    for rng, first, last in cases:
        r = shoald.request("GET", p, {"Range": rng})
        assert r.status == 206, f"{rng}: status {r.status} {r.body[:200]!r}"
        assert r.header("Content-Range") == f"bytes {first}-{last}/{SIZE}", rng
        assert int(r.header("Content-Length")) == last - first + 1, rng
        assert not r.incomplete, rng
        assert r.body == data[first:last + 1], f"{rng}: wrong bytes"

    for rng in (f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 10}"):
        r = shoald.request("GET", p, {"Range": rng})
        assert r.status == 416, f"{rng}: status {r.status}"
        assert r.header("Content-Range") == f"bytes */{SIZE}", rng


def test_ranges_uncached_then_cached(setup):
    registry, shoald, digest, data = setup
    _check_ranges(shoald, registry, digest, data)       # uncached (or partly cached)
    full = shoald.get_blob("ranges/blob", digest, ns=registry.hostport)
    assert full.status == 200 and full.digest == digest and full.length == SIZE
    mark = registry.log_mark()
    _check_ranges(shoald, registry, digest, data)       # cached
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) == 0
    assert shoald.healthy()


def test_head_blob(setup):
    registry, shoald, digest, data = setup
    for _ in range(2):  # uncached, then cached
        r = shoald.request("HEAD", h.blob_path("ranges/blob", digest, registry.hostport))
        assert r.status == 200
        assert int(r.header("Content-Length")) == SIZE
        assert r.header("Docker-Content-Digest") == digest
        shoald.get_blob("ranges/blob", digest, ns=registry.hostport)
    # unknown blob: 404 from upstream passed on
    missing = "sha256:" + "0" * 64
    r = shoald.request("HEAD", h.blob_path("ranges/blob", missing, registry.hostport))
    assert r.status == 404
    r = shoald.request("GET", h.blob_path("ranges/blob", missing, registry.hostport))
    assert r.status == 404


def test_manifest_by_tag_and_digest(registry, shoald_factory, test_dir):
    art = h.push_modelpack(registry, test_dir, "models/m", weight_size=1 * h.MiB)
    img = h.push_image(registry, test_dir, "library/img")
    shoald = shoald_factory(insecure=[registry.hostport])
    accept = {"Accept": ", ".join(h.MANIFEST_TYPES)}
    for a, repo in ((art, "models/m"), (img, "library/img")):
        for ref in (a.tag, a.manifest_digest, a.tag):
            for method in ("GET", "HEAD"):
                r = shoald.request(method, h.manifest_path(repo, ref, registry.hostport), accept)
                assert r.status == 200, f"{method} {repo}:{ref}: {r.status}"
                assert r.header("Content-Type") == h.OCI_MANIFEST
                assert r.header("Docker-Content-Digest") == a.manifest_digest
                assert int(r.header("Content-Length")) == len(a.manifest_bytes)
                if method == "GET":
                    assert r.body == a.manifest_bytes
                    assert json.loads(r.body).get("artifactType") == a.manifest.get("artifactType")
    r = shoald.request("GET", h.manifest_path("models/m", "nope", registry.hostport), accept)
    assert r.status == 404
    assert shoald.stop() == 0


def test_admin_endpoints_and_metrics(setup):
    registry, shoald, digest, data = setup
    assert shoald.admin("/healthz").status == 200
    assert shoald.admin("/readyz").status == 200
    shoald.get_blob("ranges/blob", digest, ns=registry.hostport)
    # the task is recorded complete just after the client has the last byte
    h.wait_until(lambda: shoald.metric("shoal_tasks_active") == 0, 10, what="task to finish")
    before = shoald.metrics()
    got = shoald.get_blob("ranges/blob", digest, ns=registry.hostport)  # cached
    assert got.digest == digest
    m = shoald.metrics()
    for name in ("shoal_mirror_requests_total", "shoal_mirror_client_bytes_total",
                 "shoal_source_bytes_total", "shoal_cache_hits_total",
                 "shoal_cache_misses_total", "shoal_tasks_active",
                 "shoal_storage_disk_bytes", "shoal_digest_mismatch_total"):
        assert name in m, f"/metrics lacks {name}"
    assert h.metric_with_labels(m, "shoal_mirror_requests_total", method="GET", kind="blob",
                                code="200") >= 2
    assert m["shoal_cache_hits_total"] >= before.get("shoal_cache_hits_total", 0) + 1
    assert m["shoal_mirror_client_bytes_total"] >= before["shoal_mirror_client_bytes_total"] + SIZE
    assert m["shoal_source_bytes_total"] == before["shoal_source_bytes_total"]
    assert m["shoal_storage_disk_bytes"] >= SIZE
    assert m["shoal_digest_mismatch_total"] == 0
    assert shoald.admin("/nope").status == 404
