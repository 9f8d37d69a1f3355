"""Auth passes through the mirror: the upstream's 401 challenge reaches the
client, the client's credentials go upstream, and a cached blob is served
only to a client the registry accepts."""

import shoal_harness as h

USER, PASSWORD = "alice", "s3cret"
REPO = "private/model"


def _assert_401(r, what):
    assert r.status == 401, f"{what}: expected 401, got {r.status}"
    challenge = r.header("WWW-Authenticate")
    assert challenge and challenge.lower().startswith("basic"), \
        f"{what}: WWW-Authenticate {challenge!r}"


def test_auth_passthrough(registry_factory, shoald_factory, test_dir):
    registry = registry_factory(htpasswd=(USER, PASSWORD))
    art = h.push_modelpack(registry, test_dir, REPO, weight_size=32 * h.MiB)
    weight = art.layers[0]
    shoald = shoald_factory(insecure=[registry.hostport])
    ns = registry.hostport
    good = {"Authorization": h.basic_auth(USER, PASSWORD)}
    bad = {"Authorization": h.basic_auth(USER, "wrong")}
    accept = {"Accept": ", ".join(h.MANIFEST_TYPES)}
    blob = h.blob_path(REPO, weight.digest, ns)
    manifest = h.manifest_path(REPO, art.tag, ns)

    # uncached, no credentials
    _assert_401(shoald.request("GET", manifest, accept), "manifest without credentials")
    _assert_401(shoald.request("GET", blob), "uncached blob without credentials")
    _assert_401(shoald.request("GET", blob, bad), "uncached blob with wrong credentials")
    # /v2/ is passed through too (clients probe it for the challenge)
    r = shoald.request("GET", f"/v2/?ns={ns}")
    assert r.status in (200, 401)

    # with credentials: manifest and blob
    r = shoald.request("GET", manifest, {**accept, **good})
    assert r.status == 200 and r.body == art.manifest_bytes
    got = shoald.get_blob(REPO, weight.digest, ns=ns, headers=good)
    assert got.status == 200 and got.digest == weight.digest and got.length == weight.size

    # now cached: still refused without valid credentials, and no blob bytes leak
    for what, hdrs in (("no credentials", {}), ("wrong credentials", bad)):
        for method in ("GET", "HEAD"):
            r = shoald.request(method, blob, hdrs)
            _assert_401(r, f"cached blob {method}, {what}")
            assert len(r.body) < 4096
        r = shoald.request("GET", blob, {**hdrs, "Range": "bytes=0-1023"})
        _assert_401(r, f"cached blob range, {what}")
        _assert_401(shoald.request("GET", manifest, {**accept, **hdrs}), f"manifest, {what}")
        _assert_401(shoald.request("GET", h.manifest_path(REPO, art.manifest_digest, ns),
                                   {**accept, **hdrs}), f"manifest by digest, {what}")

    # and served again with credentials, from the cache
    mark = registry.log_mark()
    got = shoald.get_blob(REPO, weight.digest, ns=ns, headers=good)
    assert got.status == 200 and got.digest == weight.digest
    registry.settle()
    assert registry.blob_body_bytes(weight.digest, since=mark) == 0
    assert registry.blob_body_bytes(weight.digest) <= weight.size * 1.01
    assert shoald.healthy()
    assert shoald.stop() == 0


def test_containerd_with_credentials(registry_factory, shoald_factory, containerd_factory,
                                     test_dir):
    registry = registry_factory(htpasswd=(USER, PASSWORD))
    art = h.push_modelpack(registry, test_dir, REPO, weight_size=8 * h.MiB)
    shoald = shoald_factory(insecure=[registry.hostport])
    ref = f"{registry.hostport}/{REPO}:{art.tag}"

    c = containerd_factory("with-creds")
    c.set_mirror(registry.hostport, shoald.mirror, fallback=False)
    c.fetch(ref, user=f"{USER}:{PASSWORD}")
    for d in art.all_digests():
        assert h.sha256_file(c.content_file(d)) == d

    # the blobs are cached now; a client without credentials still gets nothing
    c2 = containerd_factory("no-creds")
    c2.set_mirror(registry.hostport, shoald.mirror, fallback=False)
    assert c2.fetch(ref, check=False).returncode != 0
    assert art.layers[0].digest not in c2.content_digests()
    c3 = containerd_factory("wrong-creds")
    c3.set_mirror(registry.hostport, shoald.mirror, fallback=False)
    assert c3.fetch(ref, user=f"{USER}:nope", check=False).returncode != 0
    assert art.layers[0].digest not in c3.content_digests()
    assert shoald.stop() == 0
