"""The origin sends a corrupted blob body (one flipped byte, headers
unchanged): the client's response is aborted, nothing is cached as complete,
and once the origin is healthy again the blob is served correctly."""

import shoal_harness as h

SIZE = 32 * h.MiB + 77
REPO = "blobs/corrupt"


def _assert_failed(res, digest, what):
    if res.status == 200:
        assert not res.complete, \
            f"{what}: corrupt body delivered in full ({res.length} bytes) instead of aborted"
    else:
        assert res.status is None or res.status >= 500 or res.status in (400, 404), \
            f"{what}: status {res.status}"
    assert res.digest != digest


def test_corrupt_origin_not_cached(registry, proxy_factory, shoald_factory, test_dir):
    digest, _ = registry.push_random_blob(REPO, SIZE, test_dir)
    proxy = proxy_factory("127.0.0.1", registry.port)
    proxy.corrupt = True
    proxy.digests = {digest}
    shoald = shoald_factory(insecure=[proxy.hostport])
    ns = proxy.hostport

    first = shoald.get_blob(REPO, digest, ns=ns, timeout=120)
    _assert_failed(first, digest, "first GET")
    assert proxy.corrupted_responses >= 1
    assert shoald.metric("shoal_digest_mismatch_total") >= 1
    assert shoald.healthy()

    before = proxy.corrupted_responses
    second = shoald.get_blob(REPO, digest, ns=ns, timeout=120)
    _assert_failed(second, digest, "second GET")
    assert proxy.corrupted_responses > before, "second GET did not go to the origin again"
    assert shoald.metric("shoal_digest_mismatch_total") >= 2

    proxy.corrupt = False
    third = shoald.get_blob(REPO, digest, ns=ns, timeout=120)
    assert third.status == 200 and third.complete, third.error
    assert third.digest == digest

    mark = registry.log_mark()
    fourth = shoald.get_blob(REPO, digest, ns=ns)
    assert fourth.digest == digest
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) == 0
    assert shoald.healthy()
    assert shoald.stop() == 0


def _registry_range(registry, digest, first, last):
    r = h.http_request("127.0.0.1", registry.port, "GET", f"/v2/{REPO}/blobs/{digest}",
                       {"Range": f"bytes={first}-{last}"})
    assert r.status == 206
    return r.body


def test_corrupt_range_not_served(registry, proxy_factory, shoald_factory, test_dir):
    """A Range over the corrupted byte must not be answered with wrong bytes
    as a complete 206 (the whole blob does not hash to its digest)."""
    digest, _ = registry.push_random_blob(REPO, SIZE, test_dir)
    proxy = proxy_factory("127.0.0.1", registry.port)
    proxy.corrupt = True
    proxy.digests = {digest}
    shoald = shoald_factory(insecure=[proxy.hostport])
    first, last = SIZE // 2 - 10, SIZE // 2 + 10
    good = _registry_range(registry, digest, first, last)
    for attempt in range(2):
        r = shoald.request("GET", h.blob_path(REPO, digest, proxy.hostport),
                           {"Range": f"bytes={first}-{last}"}, timeout=120)
        served_corrupt = r.status == 206 and not r.incomplete and r.body != good
        assert not served_corrupt, (
            f"attempt {attempt}: complete 206 with corrupt bytes (the origin flipped byte "
            f"{SIZE // 2}; the blob never matched its digest)")
    assert shoald.healthy()
    assert shoald.stop() == 0
