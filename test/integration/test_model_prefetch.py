"""Manifest-driven prefetch: when containerd fetches a ModelPack manifest
through the mirror, shoald starts every layer at once, before containerd asks
for any blob; --no-prefetch turns it off; ordinary images are left alone."""

from __future__ import annotations

import time

import shoal_harness as h


def fetch_manifest_only(ctd, ref):
    """containerd resolves and fetches just the manifest (no layers)."""
    return ctd.ctr(["content", "fetch-object", "--hosts-dir", str(ctd.hosts_dir), "--plain-http",
                    ref])


def test_containerd_manifest_fetch_prefetches_every_layer(registry, shoald_factory,
                                                          containerd_factory, test_dir):
    art, _ = h.push_model_tree(registry, test_dir, "models/pf", weight_sizes=(16 * h.MiB,
                                                                              8 * h.MiB))
    d = shoald_factory(insecure=[registry.hostport])
    ctd = containerd_factory()
    ctd.set_mirror(registry.hostport, d.mirror, fallback=False)
    mark = registry.log_mark()
    fetch_manifest_only(ctd, f"{registry.hostport}/models/pf:v1")
    # containerd asked for no blob, yet every layer (and the config) gets read
    # from the registry and lands complete in the cache
    want = {b.digest for b in art.blobs}

    def all_cached():
        _, tasks = h.api_request(d.api_socket, "GET", "/v1/tasks")
        return {t["digest"] for t in tasks["tasks"] if t["state"] == "complete"} >= want
    h.wait_until(all_cached, 60)
    registry.settle()
    fetched = {r.blob_digest() for r in registry.requests(since=mark)
               if r.method == "GET" and r.blob_digest()}
    assert fetched >= want, want - fetched
    for b in art.blobs:
        assert registry.blob_body_bytes(b.digest, since=mark) == b.size, b.digest
    m = d.metrics()
    assert h.metric_with_labels(m, "shoal_prefetch_layers_total", result="started") == len(want)
    # the client's later blob requests are served from the cache: no second read
    mark2 = registry.log_mark()
    ctd.fetch(f"{registry.hostport}/models/pf:v1")
    for b in art.blobs:
        assert ctd.content_file(b.digest).exists()
    registry.settle()
    assert registry.all_blob_body_bytes(since=mark2) == 0


def test_no_prefetch_flag_and_plain_images(registry, shoald_factory, containerd_factory,
                                           test_dir):
    art, _ = h.push_model_tree(registry, test_dir, "models/off", weight_sizes=(2 * h.MiB,))
    img = h.push_image(registry, test_dir, "library/plain")
    off = shoald_factory(name="off", insecure=[registry.hostport], extra_args=["--no-prefetch"])
    on = shoald_factory(name="on", insecure=[registry.hostport])
    ctd_off = containerd_factory("ctd-off")
    ctd_off.set_mirror(registry.hostport, off.mirror, fallback=False)
    ctd_on = containerd_factory("ctd-on")
    ctd_on.set_mirror(registry.hostport, on.mirror, fallback=False)
    mark = registry.log_mark()
    fetch_manifest_only(ctd_off, f"{registry.hostport}/models/off:v1")
    fetch_manifest_only(ctd_on, f"{registry.hostport}/library/plain:v1")  # not a model
    # give a prefetch, if one were started, time to show up in the registry log
    time.sleep(2)
    registry.settle()
    gets = [r for r in registry.requests(since=mark) if r.method == "GET" and r.blob_digest()]
    assert gets == [], [(r.uri) for r in gets]
    assert h.metric_with_labels(off.metrics(), "shoal_prefetch_layers_total") == 0
    assert h.metric_with_labels(on.metrics(), "shoal_prefetch_layers_total") == 0
    _, tasks = h.api_request(off.api_socket, "GET", "/v1/tasks")
    assert tasks["tasks"] == []
