"""shoalctl pull and the local API: a ModelPack artifact laid out as plain
files through the swarm; tar layers; malicious tars; interrupted pulls;
no-op re-pulls; legacy cnai artifacts; the API's shapes and errors."""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from pathlib import Path

import pytest

import shoal_harness as h


def daemon(shoald_factory, registry, name="shoald", extra=None):
    return shoald_factory(name=name, insecure=[registry.hostport],
                          default_registry=registry.hostport, extra_args=extra)


def pull(d, ref, out: Path, log: Path, extra=(), timeout=600):
    return h.shoalctl(["pull", ref, "--output", str(out), "--daemon", f"unix:{d.api_socket}",
                       *extra], log, timeout=timeout, check=False)


def assert_same_tree(out: Path, src: Path):
    got, want = h.tree_listing(out), h.tree_listing(src)
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))
    for rel in want:
        assert got[rel] == want[rel], (rel, got[rel], want[rel])


def test_pull_on_three_daemons_through_the_swarm(registry, scheduler_factory, shoald_factory,
                                                 test_dir):
    art, src = h.push_model_tree(registry, test_dir, "models/tree",
                                 weight_sizes=(48 * h.MiB, 16 * h.MiB))
    mark = registry.log_mark()
    sched = scheduler_factory()
    daemons = [daemon(shoald_factory, registry, f"shoald{i}", h.swarm_args(sched))
               for i in range(3)]
    ref = f"{registry.hostport}/models/tree:v1"
    outs = [test_dir / f"out{i}" / "model" for i in range(3)]
    for o in outs:
        o.parent.mkdir(parents=True)
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(3) as ex:
        futs = [ex.submit(pull, d, ref, o, test_dir / f"pull{i}.log")
                for i, (d, o) in enumerate(zip(daemons, outs))]
        results = [f.result() for f in futs]
    took = time.monotonic() - t0
    for d, r in zip(daemons, results):
        assert r.returncode == 0, (d.name, r.stdout, d.log_tail())
        assert "done:" in r.stdout
    for d, o in zip(daemons, outs):
        assert_same_tree(o, src)  # bytes, modes, nested dirs, every layer format
        # raw files share the cache file's inode (same filesystem)
        for b in art.layers:
            rel = b.annotations["org.cncf.model.filepath"]
            if b.media_type.endswith(".raw"):
                assert (o / rel).stat().st_ino == h.cache_file(d, b.digest).stat().st_ino, rel
                assert int((o / rel).stat().st_mtime) == h.MODEL_MTIME, rel
        # the staging directory is gone
        assert [p.name for p in o.parent.iterdir()] == ["model"]
    registry.settle()
    for b in art.layers:
        served = registry.blob_body_bytes(b.digest, since=mark)
        assert served <= b.size, f"registry served {served} bytes of {b.digest} ({b.size} bytes)"
    total = sum(b.size for b in art.layers)
    print(f"3 daemons pulled {total >> 20} MiB model in {took:.1f} s, registry "
          f"{registry.all_blob_body_bytes(since=mark) / total:.3f}x, peer bytes "
          f"{[int(h.peer_bytes(d)) >> 20 for d in daemons]} MiB")


def test_pull_again_is_a_noop_and_filters_select_files(registry, shoald_factory, test_dir):
    art, src = h.push_model_tree(registry, test_dir, "models/noop", weight_sizes=(4 * h.MiB,))
    d = daemon(shoald_factory, registry)
    ref = f"{registry.hostport}/models/noop:v1"
    out = test_dir / "model"
    r = pull(d, ref, out, test_dir / "pull1.log")
    assert r.returncode == 0, r.stdout
    assert_same_tree(out, src)
    ino = out.stat().st_ino
    mark = registry.log_mark()
    r = pull(d, ref, out, test_dir / "pull2.log")
    assert r.returncode == 0, r.stdout
    assert "up to date" in r.stdout
    assert out.stat().st_ino == ino  # not rebuilt
    registry.settle()
    assert registry.all_blob_body_bytes(since=mark) == 0
    # by digest, into a second directory, with filters
    out2 = test_dir / "filtered"
    r = pull(d, f"{registry.hostport}/models/noop@{art.manifest_digest}", out2,
             test_dir / "pull3.log", ["--include", "*.json", "--include", "docs",
                                      "--exclude", "config"])
    assert r.returncode == 0, r.stdout
    files = sorted(k for k, v in h.tree_listing(out2).items() if v[0] == "file")
    assert files == ["docs/LICENSE", "docs/README.md", "tokenizer/tokenizer.json"], files
    # a pull of another manifest into a pulled directory replaces it
    r = pull(d, f"{registry.hostport}/models/noop:v1", out2, test_dir / "pull4.log")
    assert r.returncode == 0, r.stdout
    assert_same_tree(out2, src)
    # a directory someone else filled is refused, untouched
    foreign = test_dir / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    r = pull(d, ref, foreign, test_dir / "pull5.log")
    assert r.returncode == 1, r.stdout
    assert "not empty" in r.stdout
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_malicious_tar_is_refused(registry, shoald_factory, test_dir, kind):
    target = test_dir / "victim" / "pwned.txt"
    target.parent.mkdir()
    art, _ = h.push_model_tree(registry, test_dir, f"models/evil-{kind}",
                               weight_sizes=(1 * h.MiB,),
                               extra_tar=("code", h.evil_tar(kind, target), "tar"))
    d = daemon(shoald_factory, registry)
    work = test_dir / "work"
    work.mkdir()
    out = work / "model"
    r = pull(d, f"{registry.hostport}/models/evil-{kind}:v1", out, test_dir / "pull.log")
    assert r.returncode == 1, r.stdout
    assert "pull failed" in r.stdout and "layer sha256:" in r.stdout, r.stdout
    assert "inside the output directory" in r.stdout or "leave" in r.stdout \
        or "symlink" in r.stdout, r.stdout
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    assert list(work.iterdir()) == []  # neither DIR nor a staging directory
    assert d.alive()


def test_interrupted_pull_completes_when_run_again(registry, shoald_factory, test_dir):
    size = 64 * h.MiB
    art, src = h.push_model_tree(registry, test_dir, "models/slow", weight_sizes=(size,))
    mark = registry.log_mark()
    d = daemon(shoald_factory, registry, extra=["--download-rate-limit", "16MiB"])
    ref = f"{registry.hostport}/models/slow:v1"
    out = test_dir / "model"
    p = h.Proc("shoalctl", [h.shoalctl_binary(), "pull", ref, "--output", out,
                            "--daemon", f"unix:{d.api_socket}"], test_dir / "pull1.log")

    def started():
        st, body = h.api_request(d.api_socket, "GET", "/v1/pulls")
        return st == 200 and any(x["bytes_done"] > 0 for x in body["pulls"])
    h.wait_until(started, 60)
    p.kill9()  # shoalctl dies; the pull goes on inside shoald
    st, body = h.api_request(d.api_socket, "GET", "/v1/pulls")
    assert body["pulls"][0]["state"] in ("downloading", "laying_out", "done")
    r = pull(d, ref, out, test_dir / "pull2.log")  # attaches (or finds it done)
    assert r.returncode == 0, r.stdout
    assert_same_tree(out, src)
    st, body = h.api_request(d.api_socket, "GET", "/v1/pulls")
    assert len(body["pulls"]) == 1, body  # the second run attached to the first pull
    # cancel through the API mid-download (the weight dropped from the cache
    # first, so it downloads again): the staging directory goes, and a rerun
    # completes from what the cache holds
    out2 = test_dir / "model2"
    st, resp = h.api_request(d.api_socket, "DELETE", f"/v1/tasks/{art.layers[0].digest}")
    assert st == 200, resp
    st, job = h.api_request(d.api_socket, "POST", "/v1/pulls",
                            {"reference": ref, "output_dir": str(out2)})
    assert st == 202, job
    h.wait_until(lambda: h.api_request(d.api_socket, "GET", f"/v1/pulls/{job['id']}")[1]
                 ["bytes_done"] > 0, 30)
    st, end = h.api_request(d.api_socket, "DELETE", f"/v1/pulls/{job['id']}")
    assert st == 200 and end["state"] == "cancelled", end
    assert end["error"]["code"] == "cancelled"
    assert sorted(x.name for x in test_dir.iterdir() if "model2" in x.name) == []
    r = pull(d, ref, out2, test_dir / "pull3.log")
    assert r.returncode == 0, r.stdout
    assert_same_tree(out2, src)
    registry.settle()
    served = registry.blob_body_bytes(art.layers[0].digest, since=mark)
    # once for the first pull, at most once more after the task was deleted
    assert served <= 2 * size * 1.02, served


def test_legacy_cnai_artifact_pulls_the_same_way(registry, shoald_factory, test_dir):
    art, src = h.push_model_tree(registry, test_dir, "models/legacy", weight_sizes=(2 * h.MiB,),
                                 legacy=True)
    assert art.manifest["artifactType"] == "application/vnd.cnai.model.manifest.v1+json"
    d = daemon(shoald_factory, registry)
    out = test_dir / "model"
    r = pull(d, f"{registry.hostport}/models/legacy:v1", out, test_dir / "pull.log")
    assert r.returncode == 0, r.stdout
    assert_same_tree(out, src)


def test_api_shapes_and_errors(registry, shoald_factory, test_dir):
    art, src = h.push_model_tree(registry, test_dir, "models/api", weight_sizes=(1 * h.MiB,))
    api_port = h.free_port()
    d = daemon(shoald_factory, registry, extra=["--api-listen", f"127.0.0.1:{api_port}"])
    sock = d.api_socket
    assert oct(os.stat(sock).st_mode & 0o777) == oct(0o660)
    # streamed pull: status first, state changes, progress, end
    out = test_dir / "model"
    st, events = h.api_events(sock, "POST", "/v1/pulls",
                              {"reference": f"{registry.hostport}/models/api:v1",
                               "output_dir": str(out)})
    assert st == 202
    types = [e["type"] for e in events]
    assert types[0] == "status" and types[-1] == "end", types
    assert "state" in types
    end = events[-1]["pull"]
    assert end["state"] == "done" and end["manifest_digest"] == art.manifest_digest
    assert end["bytes_done"] == end["bytes_total"] == sum(b.size for b in art.layers)
    assert {l["digest"] for l in end["layers"]} == {b.digest for b in art.layers}
    assert end["layout"]["files"] >= 4
    assert_same_tree(out, src)
    st, one = h.api_request(sock, "GET", f"/v1/pulls/{end['id']}")
    assert st == 200 and one["state"] == "done"
    st, evs = h.api_events(sock, "GET", f"/v1/pulls/{end['id']}/events")
    assert st == 200 and [e["type"] for e in evs] == ["status", "end"]
    # errors: JSON {"error":{"code","message"}} with fitting statuses
    for method, path, body, want, code in [
            ("POST", "/v1/pulls", "{not json", 400, "invalid_argument"),
            ("POST", "/v1/pulls", {"reference": "x/y:z", "output_dir": "relative"}, 400,
             "invalid_argument"),
            ("GET", "/v1/pulls/nope", None, 404, "not_found"),
            ("DELETE", "/v1/pulls/nope", None, 404, "not_found"),
            ("PUT", "/v1/pulls", None, 405, "method_not_allowed"),
            ("GET", "/v2/", None, 404, "not_found"),
            ("DELETE", "/v1/tasks/sha256:xyz", None, 400, "invalid_argument"),
            ("DELETE", f"/v1/tasks/sha256:{'0' * 64}", None, 404, "not_found")]:
        st, resp = h.api_request(sock, method, path, body)
        assert st == want, (method, path, st, resp)
        assert resp["error"]["code"] == code and resp["error"]["message"], resp
    # an oversized body is refused from its Content-Length, before it is read
    import socket as so
    with so.socket(so.AF_UNIX, so.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(b"POST /v1/pulls HTTP/1.1\r\nHost: x\r\nContent-Length: 204800\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
    assert b'"code":"too_large"' in raw, raw
    # a missing manifest: the pull is accepted, then fails with not_found
    st, evs = h.api_events(sock, "POST", "/v1/pulls?follow=true",
                           {"reference": f"{registry.hostport}/models/none:v1",
                            "output_dir": str(test_dir / "none")})
    assert evs[-1]["pull"]["state"] == "failed"
    assert evs[-1]["pull"]["error"]["code"] == "not_found", evs[-1]
    # tasks: listed, deletable (the pulled directory keeps its hard link)
    st, tasks = h.api_request(sock, "GET", "/v1/tasks")
    assert st == 200
    listed = {t["digest"]: t for t in tasks["tasks"]}
    w = art.layers[0]
    assert listed[w.digest]["state"] == "complete" and listed[w.digest]["size"] == w.size
    st, resp = h.api_request(sock, "DELETE", f"/v1/tasks/{w.digest}")
    assert st == 200 and resp["deleted"] == w.digest
    assert not h.cache_file(d, w.digest).exists()
    assert h.sha256_file(out / "model-00001-of-00001.safetensors") == w.digest
    # the same API over TCP (--api-listen), shoalctl --daemon HOST:PORT
    out2 = test_dir / "tcp"
    r = h.shoalctl(["pull", f"{registry.hostport}/models/api:v1", "-o", str(out2),
                    "--daemon", f"127.0.0.1:{api_port}"], test_dir / "tcp.log", check=False)
    assert r.returncode == 0, r.stdout
    assert_same_tree(out2, src)
    # metrics
    m = d.metrics()
    assert h.metric_with_labels(m, "shoal_api_pulls_total", result="done") >= 2
    # a stale socket is replaced on restart; a live one is refused
    d.kill9()
    import socket as so
    stale = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: like after a crash
    d.start()
    assert h.api_request(sock, "GET", "/v1/pulls")[0] == 200
    d2 = shoald_factory(start=False, name="second", insecure=[registry.hostport])
    d2.api_socket = sock
    with pytest.raises(Exception):
        d2.start(timeout=10)
    assert "another process" in d2.log_tail(), d2.log_tail()
    d2.proc = None  # it exited: nothing to stop (and its socket path is d's)
    assert h.api_request(sock, "GET", "/v1/pulls")[0] == 200


def test_progress_bar_on_a_terminal_and_ctrl_c_cancels(registry, shoald_factory, test_dir):
    size = 48 * h.MiB
    art, src = h.push_model_tree(registry, test_dir, "models/tty", weight_sizes=(size,))
    d = daemon(shoald_factory, registry, extra=["--download-rate-limit", "16MiB"])
    ref = f"{registry.hostport}/models/tty:v1"
    # on a terminal (script(1) gives shoalctl a pty): live bars, rate and ETA
    out = test_dir / "model"
    cmd = (f"{h.shoalctl_binary()} pull {ref} --output {out} "
           f"--daemon unix:{d.api_socket}")
    r = h.run(["script", "-qec", cmd, "/dev/null"], test_dir / "tty.log", check=False)
    assert r.returncode == 0, r.stdout
    assert "\x1b[1A" in r.stdout and "ETA" in r.stdout and "/s" in r.stdout, r.stdout[-2000:]
    assert "model-00001-of-00001.safetensors" in r.stdout
    assert_same_tree(out, src)
    # Ctrl-C (SIGINT) cancels the pull inside shoald
    st, resp = h.api_request(d.api_socket, "DELETE", f"/v1/tasks/{art.layers[0].digest}")
    assert st == 200, resp
    out2 = test_dir / "model2"
    p = h.Proc("shoalctl", [h.shoalctl_binary(), "pull", ref, "--output", out2,
                            "--daemon", f"unix:{d.api_socket}"], test_dir / "sigint.log")

    def downloading():
        _, body = h.api_request(d.api_socket, "GET", "/v1/pulls")
        return any(x["output_dir"] == str(out2) and x["bytes_done"] > 0 for x in body["pulls"])
    h.wait_until(downloading, 60)
    p.send_signal(2)
    assert p.wait(timeout=30) == 1
    _, body = h.api_request(d.api_socket, "GET", "/v1/pulls")
    job = next(x for x in body["pulls"] if x["output_dir"] == str(out2))
    assert job["state"] == "cancelled", job
    assert not out2.exists()
    assert "cancelling pull" in p.log_tail()
