"""Self-check of the harness against the real registry, skopeo and containerd
(no shoald needed): pushes, log accounting, direct containerd pull, the
corrupting (and pacing, severing) proxy and the fake upstream. Fast (small blobs)."""

import json
import threading

import shoal_harness as h


def test_registry_push_and_log_accounting(registry, test_dir):
    art = h.push_modelpack(registry, test_dir, "models/tiny", weight_size=6 * h.MiB)
    assert art.manifest["artifactType"] == h.MODEL_ARTIFACT
    assert art.config.media_type == h.MODEL_CONFIG
    assert [l.media_type for l in art.layers] == [h.MODEL_WEIGHT_RAW, h.MODEL_WEIGHT_CONFIG_TAR]
    cfg = json.loads(art.config.path.read_bytes())
    assert cfg["modelfs"]["diffIds"] == [l.digest for l in art.layers]

    weight = art.layers[0]
    mark = registry.log_mark()
    full = h.http_stream_digest("127.0.0.1", registry.port, f"/v2/models/tiny/blobs/{weight.digest}")
    assert full.status == 200 and full.digest == weight.digest
    r = h.http_request("127.0.0.1", registry.port, "GET", f"/v2/models/tiny/blobs/{weight.digest}",
                       {"Range": "bytes=100-199"})
    assert r.status == 206 and len(r.body) == 100
    registry.settle()
    assert registry.blob_body_bytes(weight.digest, since=mark) == weight.size + 100
    assert len(registry.blob_gets(weight.digest, since=mark)) == 2
    # a blob pushed over the HTTP API
    d, path = registry.push_random_blob("blobs/one", 3 * h.MiB + 7, test_dir)
    got = h.http_stream_digest("127.0.0.1", registry.port, f"/v2/blobs/one/blobs/{d}")
    assert got.digest == d and got.length == 3 * h.MiB + 7


def test_skopeo_roundtrip_preserves_artifact(registry, test_dir):
    art = h.push_modelpack(registry, test_dir, "models/rt", weight_size=1 * h.MiB)
    img = h.push_image(registry, test_dir, "images/rt")
    for a, repo in ((art, "models/rt"), (img, "images/rt")):
        out = test_dir / f"out-{repo.replace('/', '_')}"
        h.skopeo_copy(f"docker://{registry.hostport}/{repo}:v1", f"oci:{out}:v1",
                      test_dir / "skopeo.log")
        _, mbytes, mdigest = h.read_oci_layout(out, "v1")
        assert mdigest == a.manifest_digest and mbytes == a.manifest_bytes
        for b in a.blobs:
            assert h.sha256_file(out / "blobs" / "sha256" / b.digest.split(":")[1]) == b.digest


def test_containerd_direct_pull(registry, containerd_factory, test_dir):
    art = h.push_modelpack(registry, test_dir, "models/ctd", weight_size=5 * h.MiB)
    c = containerd_factory()
    c.set_mirror(registry.hostport, None)
    c.fetch(f"{registry.hostport}/models/ctd:v1")
    have = c.content_digests()
    for d in art.all_digests():
        assert d in have
        assert h.sha256_file(c.content_file(d)) == d


def test_auth_registry(registry_factory, containerd_factory, test_dir):
    reg = registry_factory(htpasswd=("alice", "s3cret"))
    art = h.push_modelpack(reg, test_dir, "private/m", weight_size=1 * h.MiB)
    r = h.http_request("127.0.0.1", reg.port, "GET", "/v2/private/m/manifests/v1")
    assert r.status == 401 and r.header("WWW-Authenticate", "").startswith("Basic")
    c = containerd_factory()
    c.set_mirror(reg.hostport, None)
    assert c.fetch(f"{reg.hostport}/private/m:v1", check=False).returncode != 0
    c.fetch(f"{reg.hostport}/private/m:v1", user="alice:s3cret")
    assert art.layers[0].digest in c.content_digests()


def test_corrupting_proxy(registry, proxy_factory, test_dir):
    d, _ = registry.push_random_blob("blobs/c", 2 * h.MiB + 1, test_dir)
    p = proxy_factory("127.0.0.1", registry.port)
    path = f"/v2/blobs/c/blobs/{d}"
    assert h.http_stream_digest("127.0.0.1", p.port, path).digest == d
    p.corrupt = True
    p.digests = {d}
    bad = h.http_stream_digest("127.0.0.1", p.port, path)
    assert bad.status == 200 and bad.complete and bad.length == 2 * h.MiB + 1
    assert bad.digest != d
    lo = h.http_request("127.0.0.1", p.port, "GET", path, {"Range": "bytes=0-1023"})
    assert lo.status == 206 and h.sha256_bytes(lo.body) == h.sha256_bytes(
        h.http_request("127.0.0.1", registry.port, "GET", path, {"Range": "bytes=0-1023"}).body)
    assert p.corrupted_responses == 1
    p.corrupt = False
    assert h.http_stream_digest("127.0.0.1", p.port, path).digest == d
    assert ("GET", path, "bytes=0-1023", 206) in p.requests
    # paced at 1 MiB/s and severed after ~0.5 s: the body ends short, and the
    # next request is refused
    p.pace = h.MiB
    threading.Timer(0.5, p.sever).start()
    cut = h.http_stream_digest("127.0.0.1", p.port, path)
    assert not cut.complete and 0 < cut.length < h.MiB, (cut.length, cut.complete)
    assert h.raw_status(h.raw_http("127.0.0.1", p.port, f"GET {path} HTTP/1.1\r\n"
                                   "Host: x\r\n\r\n".encode())) is None


def test_fake_upstream(fake_upstream_factory):
    u = fake_upstream_factory()
    body = b"x" * (300 * 1024)
    u.routes["/v2/a/manifests/big"] = (200, {"Content-Type": h.OCI_MANIFEST}, body)
    u.routes["/v2/a/manifests/chunked"] = (200, {"Content-Type": h.OCI_MANIFEST,
                                                 "Transfer-Encoding": "chunked"}, body)
    for ref in ("big", "chunked"):
        r = h.http_request("127.0.0.1", u.port, "GET", f"/v2/a/manifests/{ref}")
        assert r.status == 200 and r.body == body
    assert h.http_request("127.0.0.1", u.port, "GET", "/v2/nope/manifests/x").status == 404
