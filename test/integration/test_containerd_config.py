"""`shoalctl containerd-config` writes hosts.toml files that make a real
containerd pull through shoald: the registry's log shows every manifest and
blob read by shoald (its User-Agent), none by containerd. Rerunning the
command changes nothing; a hand-edited file is backed up and replaced;
--dry-run writes nothing; bad flags are refused."""

from __future__ import annotations

import subprocess

import pytest

import shoal_harness as h

REPO = "images/app"


def shoalctl(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    if not h.shoalctl_binary().exists():
        pytest.fail(f"shoalctl not built: {h.shoalctl_binary()}")
    p = subprocess.run([str(h.shoalctl_binary()), "containerd-config"] + args,
                       capture_output=True, text=True, timeout=30)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def fetch_through_shoald(c: h.Containerd, registry: h.Registry, shoald: h.Shoald, ref: str,
                         art: h.Artifact) -> None:
    """containerd pulls `ref`; every registry read came from shoald."""
    mark = registry.log_mark()
    c.fetch(ref)
    have = c.content_digests()
    for d in art.all_digests():
        assert d in have, f"{d} missing from containerd's content store"
        assert h.sha256_file(c.content_file(d)) == d
    registry.settle()
    reqs = [r for r in registry.requests(mark) if r.uri.startswith("/v2/" + REPO)]
    assert reqs, "the registry saw no request for the image"
    for r in reqs:
        assert r.useragent.startswith("shoal/"), \
            f"containerd went to the registry itself: {r.method} {r.uri} ({r.useragent})"
    # ... and shoald read every blob body (a first pull: nothing was cached)
    got = {r.blob_digest() for r in reqs if r.method == "GET" and r.blob_digest()}
    assert {b.digest for b in art.blobs} <= got, got


def test_hosts_toml_makes_containerd_pull_through_shoald(registry, shoald_factory,
                                                         containerd_factory, test_dir):
    art = h.push_image(registry, test_dir, REPO)
    shoald = shoald_factory(insecure=[registry.hostport])
    ref = f"{registry.hostport}/{REPO}:{art.tag}"
    c = containerd_factory("containerd")
    out = shoalctl(["--registry", f"http://{registry.hostport}",
                    "--mirror", f"http://{shoald.mirror}",
                    "--config-path", str(c.hosts_dir)])
    path = c.hosts_dir / registry.hostport / "hosts.toml"
    assert f"{path}: written" in out.stdout
    text = path.read_text()
    assert f'server = "http://{registry.hostport}"' in text
    assert f'[host."http://{shoald.mirror}"]' in text
    assert 'capabilities = ["pull", "resolve"]' in text

    fetch_through_shoald(c, registry, shoald, ref, art)
    m = shoald.metrics()
    assert m["shoal_mirror_client_bytes_total"] == sum(b.size for b in art.blobs)
    assert h.metric_with_labels(m, "shoal_mirror_requests_total", kind="manifest") >= 1


def test_default_sends_every_registry_through_shoald(registry, shoald_factory,
                                                     containerd_factory, test_dir):
    art = h.push_image(registry, test_dir, REPO)
    shoald = shoald_factory(insecure=[registry.hostport])
    c = containerd_factory("containerd")
    out = shoalctl(["--mirror", f"http://{shoald.mirror}", "--config-path", str(c.hosts_dir)])
    path = c.hosts_dir / "_default" / "hosts.toml"
    assert f"{path}: written" in out.stdout
    assert "server" not in path.read_text()
    assert not (c.hosts_dir / registry.hostport).exists()
    # containerd sends ns=<registry> to the mirror; shoald reads that registry
    fetch_through_shoald(c, registry, shoald, f"{registry.hostport}/{REPO}:{art.tag}", art)
    assert shoald.metrics()["shoal_mirror_client_bytes_total"] == sum(b.size for b in art.blobs)


def test_idempotent_backup_and_dry_run(test_dir):
    cfg = test_dir / "certs.d"
    args = ["--registry", "registry.example.com", "--registry", "docker.io",
            "--mirror", "http://127.0.0.1:7400", "--config-path", str(cfg)]
    first = shoalctl(args)
    ours = cfg / "registry.example.com" / "hosts.toml"
    hub = cfg / "docker.io" / "hosts.toml"
    assert first.stdout.count(": written") == 2
    assert 'server = "https://registry.example.com"' in ours.read_text()
    assert 'server = "https://registry-1.docker.io"' in hub.read_text()
    content, inode, mtime = ours.read_bytes(), ours.stat().st_ino, ours.stat().st_mtime_ns

    # the same again: nothing touched, no backup
    again = shoalctl(args)
    assert again.stdout.count(": unchanged") == 2, again.stdout
    assert ours.stat().st_ino == inode and ours.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in ours.parent.iterdir()) == ["hosts.toml"]

    # someone edited it: the edit is kept in a backup, the file is ours again
    edited = b'server = "https://registry.example.com"\n# local change\n'
    ours.write_bytes(edited)
    replaced = shoalctl(args)
    assert f"{ours}: replaced" in replaced.stdout, replaced.stdout
    backups = [p for p in ours.parent.iterdir() if p.name.startswith("hosts.toml.bak-")]
    assert len(backups) == 1, backups
    assert backups[0].read_bytes() == edited
    assert ours.read_bytes() == content
    assert "unchanged" in replaced.stdout  # docker.io was not edited

    # --dry-run prints the files and writes nothing
    fresh = test_dir / "fresh"
    dry = shoalctl(["--registry", "ghcr.io", "--config-path", str(fresh), "--dry-run"])
    assert f"# {fresh}/ghcr.io/hosts.toml" in dry.stdout
    assert 'server = "https://ghcr.io"' in dry.stdout
    assert '[host."http://127.0.0.1:7400"]' in dry.stdout  # the default --mirror
    assert not fresh.exists()


def test_bad_flags_are_refused(test_dir):
    for bad in (["--registry", "../etc"], ["--registry", "a/b"],
                ["--mirror", "127.0.0.1:7400"], ["--mirror", "http://h:1/v2"]):
        p = shoalctl(bad + ["--config-path", str(test_dir / "x")], check=False)
        assert p.returncode == 2, (bad, p.stdout, p.stderr)
        assert "--registry" in p.stderr or "--mirror" in p.stderr, p.stderr
        assert not (test_dir / "x").exists()
    # a config path that cannot be a directory: exit 1, the path is named
    blocker = test_dir / "file"
    blocker.write_text("x")
    p = shoalctl(["--config-path", str(blocker)], check=False)
    assert p.returncode == 1 and str(blocker) in p.stderr, p.stderr
