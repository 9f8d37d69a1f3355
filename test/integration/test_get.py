"""shoalctl get: a plain HTTP(S) file through shoald's local API (POST
/v1/files), the piece cache and the swarm. The origin here is the registry's
blob URL used as a plain file URL (it answers HEAD and Range); signed-URL
parameters that differ per client do not change the task, so three daemons
fetch the file from the origin once, and a second get is a cache hit."""

from __future__ import annotations

import concurrent.futures as cf

import shoal_harness as h

SIZE = 48 * h.MiB + 4321


def test_three_daemons_get_one_url_the_origin_serves_it_once(
        registry, scheduler_factory, shoald_factory, test_dir):
    digest, src = registry.push_random_blob("files/f", SIZE, test_dir)
    base = f"http://{registry.hostport}/v2/files/f/blobs/{digest}"
    sched = scheduler_factory()
    daemons = [shoald_factory(name=f"shoald{i}", insecure=[registry.hostport],
                              extra_args=h.swarm_args(sched)) for i in range(3)]
    mark = registry.log_mark()

    def get(i, d):
        url = f"{base}?X-Amz-Signature=sig{i}&X-Amz-Expires={60 + i}&X-Amz-Date=2026"
        out = test_dir / f"out{i}" / "file.bin"
        r = h.shoalctl(["get", "--daemon", f"unix:{d.api_socket}", url, "--output", str(out)],
                       test_dir / f"get{i}.log")
        return out, r

    with cf.ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda a: get(*a), enumerate(daemons)))
    for out, r in results:
        assert h.sha256_file(out) == digest, r.stdout
    registry.settle()
    served = registry.blob_body_bytes(digest, since=mark)
    assert served <= 1.01 * SIZE, f"origin served {served} bytes for a {SIZE}-byte file"
    assert sum(1 for d in daemons if h.peer_bytes(d) >= 0.9 * SIZE) >= 2

    # Again, another signature: from the cache, nothing from the origin.
    mark2 = registry.log_mark()
    out, r = get(9, daemons[0])
    assert "from the cache" in r.stdout and h.sha256_file(out) == digest
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark2) == 0


def test_get_with_a_wrong_digest_fails_and_leaves_no_file(registry, shoald_factory, test_dir):
    digest, _ = registry.push_random_blob("files/g", 5 * h.MiB, test_dir)
    d = shoald_factory(name="shoald", insecure=[registry.hostport])
    url = f"http://{registry.hostport}/v2/files/g/blobs/{digest}"
    out = test_dir / "bad" / "file.bin"
    r = h.shoalctl(["get", "--daemon", f"unix:{d.api_socket}", url, "--output", str(out),
                    "--digest", "sha256:" + "0" * 64], test_dir / "get-bad.log", check=False)
    assert r.returncode == 1 and "hashes to" in r.stdout, r.stdout
    assert not out.exists()
    # With the right digest it works (and a URL the daemon may not reach is refused).
    r = h.shoalctl(["get", "--daemon", f"unix:{d.api_socket}", url, "--output", str(out),
                    "--digest", digest], test_dir / "get-good.log")
    assert h.sha256_file(out) == digest
    r = h.shoalctl(["get", "--daemon", f"unix:{d.api_socket}", "http://127.0.0.1:9/x",
                    "--output", str(test_dir / "x")], test_dir / "get-ssrf.log", check=False)
    assert r.returncode == 1 and "insecure" in r.stdout, r.stdout
