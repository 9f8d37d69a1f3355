"""containerd pulls a ModelPack artifact through shoald (hosts.toml mirror).

The registry's own request log is the judge: the first pull reads each blob
body from the registry about once, a second pull by a fresh containerd reads
none (everything comes from shoald's cache)."""

import shoal_harness as h

REPO = "models/llm"


def test_containerd_pull_through_mirror_then_from_cache(registry, shoald_factory,
                                                        containerd_factory, test_dir):
    art = h.push_modelpack(registry, test_dir, REPO, weight_size=256 * h.MiB)
    shoald = shoald_factory(insecure=[registry.hostport])
    ref = f"{registry.hostport}/{REPO}:{art.tag}"

    # first pull; fallback=False: containerd's only route to the registry is shoald
    mark1 = registry.log_mark()
    c1 = containerd_factory("containerd1")
    c1.set_mirror(registry.hostport, shoald.mirror, fallback=False)
    c1.fetch(ref)
    have = c1.content_digests()
    for d in art.all_digests():
        assert d in have, f"{d} missing from containerd's content store"
        assert h.sha256_file(c1.content_file(d)) == d
    assert c1.content_file(art.manifest_digest).read_bytes() == art.manifest_bytes
    registry.settle()
    for b in art.blobs:
        read = registry.blob_body_bytes(b.digest, since=mark1)
        assert b.size <= read <= b.size * 1.01 + 4096, \
            f"first pull: registry wrote {read} body bytes for {b.digest} of {b.size}"

    # second pull by a fresh containerd: no blob body from the registry
    mark2 = registry.log_mark()
    c2 = containerd_factory("containerd2")
    c2.set_mirror(registry.hostport, shoald.mirror, fallback=False)
    c2.fetch(ref)
    have2 = c2.content_digests()
    for d in art.all_digests():
        assert d in have2
        assert h.sha256_file(c2.content_file(d)) == d
    registry.settle()
    assert registry.all_blob_body_bytes(since=mark2) == 0, \
        [(r.method, r.uri, r.written) for r in registry.requests(mark2)]

    # third pull after `ctr content rm` in the first containerd: still no body bytes
    mark3 = registry.log_mark()
    c1.content_rm([b.digest for b in art.blobs])
    assert art.layers[0].digest not in c1.content_digests()
    c1.fetch(ref)
    assert h.sha256_file(c1.content_file(art.layers[0].digest)) == art.layers[0].digest
    registry.settle()
    assert registry.all_blob_body_bytes(since=mark3) == 0

    assert shoald.healthy()
    assert shoald.stop() == 0, "shoald did not exit 0 on SIGTERM"
