"""Hostile or malformed requests to the mirror: rejected with a 4xx, no
crash, nothing written under data-dir/content, shoald healthy after each."""

import hashlib
import json

import pytest

import shoal_harness as h

GOOD_HEX = hashlib.sha256(b"shoal").hexdigest()


@pytest.fixture
def env(registry, shoald_factory, fake_upstream_factory, test_dir):
    img = h.push_image(registry, test_dir, "library/img")
    fake = fake_upstream_factory()
    shoald = shoald_factory(insecure=[registry.hostport, fake.hostport],
                            default_registry=registry.hostport)
    return registry, shoald, fake, img


def _content_files(shoald):
    return set(shoald.content_files())


def _check_4xx(shoald, method, path, allowed=None, headers=None):
    r = shoald.request(method, path, headers or {}, timeout=30)
    if allowed:
        assert r.status in allowed, f"{method} {path}: {r.status} not in {allowed}"
    else:
        assert 400 <= r.status < 500, f"{method} {path}: {r.status}"
    assert shoald.healthy(), f"shoald unhealthy after {method} {path}:\n{shoald.log_tail()}"
    return r


BAD_BLOB_PATHS = [
    "/v2/x/blobs/sha256:../../etc",
    "/v2/x/blobs/sha256:..%2f..%2fetc%2fpasswd",
    "/v2/x/blobs/sha256:" + "../" * 20 + "etc/passwd",
    "/v2/x/blobs/sha256:" + GOOD_HEX.upper(),             # uppercase hex
    "/v2/x/blobs/sha256:" + GOOD_HEX[:63],                # short
    "/v2/x/blobs/sha256:" + GOOD_HEX + "0",               # long
    "/v2/x/blobs/sha256:" + GOOD_HEX[:63] + "g",          # not hex
    "/v2/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
    "/v2/x/blobs/sha256:",
    "/v2/x/blobs/" + GOOD_HEX,                             # no algorithm
    "/v2/x/blobs/sha256:%00" + GOOD_HEX[1:],
]

BAD_NAMES = [
    "/v2/UPPER/blobs/sha256:" + GOOD_HEX,
    "/v2/a..b/blobs/sha256:" + GOOD_HEX,
    "/v2/-x/blobs/sha256:" + GOOD_HEX,
    "/v2/x/../../etc/blobs/sha256:" + GOOD_HEX,
    "/v2/%2e%2e/blobs/sha256:" + GOOD_HEX,
    "/v2//blobs/sha256:" + GOOD_HEX,
    "/v2/" + "a" * 300 + "/blobs/sha256:" + GOOD_HEX,
    "/v2/x/manifests/" + "t" * 200,                        # tag longer than 128
    "/v2/x/manifests/bad:tag",
    "/v2/x/manifests/../../etc",
]

UNKNOWN_PATHS = [
    "/v3/",
    "/",
    "/v2/x/tags/list",
    "/v2/_catalog",
    "/v2/x/referrers/sha256:" + GOOD_HEX,
    "/metrics",
    "/etc/passwd",
]


def test_bad_digests_and_names(env):
    registry, shoald, _, _ = env
    before = _content_files(shoald)
    for p in BAD_BLOB_PATHS + BAD_NAMES:
        for method in ("GET", "HEAD"):
            _check_4xx(shoald, method, p, allowed=(400, 404))
    assert _content_files(shoald) == before


def test_unknown_paths_404(env):
    _, shoald, _, _ = env
    for p in UNKNOWN_PATHS:
        _check_4xx(shoald, "GET", p, allowed=(404,))


def test_upload_paths_refused(env):
    _, shoald, _, _ = env
    for method in ("GET", "POST", "PUT", "PATCH"):
        _check_4xx(shoald, method, "/v2/x/blobs/uploads/", allowed=(400, 404, 405))
        _check_4xx(shoald, method, "/v2/x/blobs/uploads/some-uuid", allowed=(400, 404, 405))


def test_write_methods_405(env):
    _, shoald, _, img = env
    paths = [h.blob_path("library/img", img.layers[0].digest),
             h.manifest_path("library/img", img.tag),
             h.manifest_path("library/img", img.manifest_digest)]
    for p in paths:
        for method in ("PUT", "POST", "DELETE", "PATCH"):
            _check_4xx(shoald, method, p, allowed=(405,))
    # the image is still intact upstream and served
    r = shoald.request("GET", h.manifest_path("library/img", img.tag),
                       {"Accept": ", ".join(h.MANIFEST_TYPES)})
    assert r.status == 200 and r.body == img.manifest_bytes


def test_oversized_and_garbage_requests(env):
    _, shoald, _, _ = env
    host, port = "127.0.0.1", shoald.mirror_port
    big = b"x" * (100 * 1024)
    resp = h.raw_http(host, port, b"GET /v2/ HTTP/1.1\r\nHost: a\r\nX-Big: " + big + b"\r\n\r\n")
    assert h.raw_status(resp) in (400, 431), resp[:200]
    assert shoald.healthy()
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    resp = h.raw_http(host, port, b"GET /v2/ HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert h.raw_status(resp) in (400, 431), resp[:200]
    assert shoald.healthy()
    long_target = b"/v2/" + b"a/" * 40000 + b"blobs/sha256:" + GOOD_HEX.encode()
    resp = h.raw_http(host, port, b"GET " + long_target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert h.raw_status(resp) in (400, 404, 414, 431), resp[:200]
    assert shoald.healthy()
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # TLS hello
                    b"NOT HTTP AT ALL\r\n\r\n",
                    b"GET /v2/ HTTP/9.9\r\n\r\n",
                    b"GET /v2/ HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                    b"GET /v2/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        resp = h.raw_http(host, port, garbage, timeout=5)
        st = h.raw_status(resp)
        assert st is None or 400 <= st < 500 or st == 505, (garbage[:20], resp[:200])
        assert shoald.healthy(), f"after {garbage[:20]!r}:\n{shoald.log_tail()}"
    # a malformed Range is ignored (200) or refused (400/416), never a crash
    _, _, _, img = env
    r = shoald.request("GET", h.blob_path("library/img", img.layers[0].digest),
                       {"Range": "bytes=abc-def"})
    assert r.status in (200, 400, 416)
    assert shoald.healthy()


def test_huge_manifest_refused_and_not_cached(env):
    registry, shoald, fake, img = env
    before = _content_files(shoald)
    manifest = dict(img.manifest)
    manifest["annotations"] = {"pad": "x" * (5 * h.MiB)}
    body = json.dumps(manifest).encode()
    digest = h.sha256_bytes(body)
    hdrs = {"Content-Type": h.OCI_MANIFEST, "Docker-Content-Digest": digest}
    # distribution 2.8 refuses manifests over 4 MiB, so a fake upstream serves it
    for ref in ("huge", digest):
        fake.routes[f"/v2/big/manifests/{ref}"] = (200, hdrs, body)
        fake.routes[f"/v2/chunked/manifests/{ref}"] = (
            200, {**hdrs, "Transfer-Encoding": "chunked"}, body)
    accept = {"Accept": ", ".join(h.MANIFEST_TYPES)}
    for repo in ("big", "chunked"):
        for ref in ("huge", digest, "huge"):
            r = _check_4xx(shoald, "GET", h.manifest_path(repo, ref, fake.hostport),
                           headers=accept)
            assert len(r.body) < 64 * 1024
    # not cached: with the upstream gone silent, by digest it is still refused
    fake.routes.clear()
    for repo in ("big", "chunked"):
        r = shoald.request("GET", h.manifest_path(repo, digest, fake.hostport), accept)
        assert r.status != 200
    assert _content_files(shoald) == before
    assert shoald.healthy()
    assert shoald.stop() == 0


def test_upstream_not_allowed(env):
    """An ns= that is not a configured insecure registry is not fetched over
    plain http on loopback (no SSRF)."""
    registry, shoald, _, img = env
    other = h.FakeUpstream().start()
    try:
        other.routes[f"/v2/library/img/manifests/{img.tag}"] = (
            200, {"Content-Type": h.OCI_MANIFEST}, img.manifest_bytes)
        r = shoald.request("GET", h.manifest_path("library/img", img.tag, other.hostport),
                           {"Accept": h.OCI_MANIFEST}, timeout=30)
        assert r.status != 200
        assert not [q for q in other.requests if q[0] == "GET" and "manifests" in q[1]], \
            "shoald fetched from a loopback upstream that is not configured"
        assert shoald.healthy()
    finally:
        other.stop()
