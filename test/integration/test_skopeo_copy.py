"""skopeo addresses shoald as a registry (--default-registry) and copies
artifacts to a local OCI layout: manifest and blobs byte-identical."""

import filecmp

import shoal_harness as h


def _copy_and_compare(shoald, art, repo, test_dir, name):
    out = test_dir / f"out-{name}"
    h.skopeo_copy(f"docker://{shoald.mirror}/{repo}:{art.tag}", f"oci:{out}:{art.tag}",
                  test_dir / "skopeo-pull.log")
    _, mbytes, mdigest = h.read_oci_layout(out, art.tag)
    assert mdigest == art.manifest_digest
    assert mbytes == art.manifest_bytes
    for b in art.blobs:
        got = out / "blobs" / "sha256" / b.digest.split(":", 1)[1]
        assert got.stat().st_size == b.size
        assert h.sha256_file(got) == b.digest
        assert filecmp.cmp(got, b.path, shallow=False)


def test_skopeo_copy_modelpack_and_image(registry, shoald_factory, test_dir):
    model = h.push_modelpack(registry, test_dir, "models/llm", weight_size=256 * h.MiB)
    image = h.push_image(registry, test_dir, "library/hello")
    shoald = shoald_factory(insecure=[registry.hostport], default_registry=registry.hostport)

    mark = registry.log_mark()
    _copy_and_compare(shoald, model, "models/llm", test_dir, "model")
    _copy_and_compare(shoald, image, "library/hello", test_dir, "image")
    registry.settle()
    for b in model.blobs + image.blobs:
        read = registry.blob_body_bytes(b.digest, since=mark)
        assert read <= b.size * 1.01 + 4096, f"{b.digest}: {read} bytes read for {b.size}"

    # again, from the cache: no blob body from the registry
    mark2 = registry.log_mark()
    _copy_and_compare(shoald, model, "models/llm", test_dir, "model-2")
    registry.settle()
    assert registry.all_blob_body_bytes(since=mark2) == 0

    assert shoald.stop() == 0
