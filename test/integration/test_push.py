"""shoalctl push: a model directory becomes a ModelPack artifact in a real
registry (docker-registry), uploaded in chunks; a second push uploads no
blob; a push cut mid-upload or killed and rerun finishes without sending
again what the registry already holds."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import jsonschema
import pytest

import shoal_harness as h

SCHEMA = Path(__file__).resolve().parent / "data" / "modelpack-config-schema.json"
WEIGHT = 256 * h.MiB


def get_json(registry: h.Registry, repo: str, path: str, accept: str | None = None) -> tuple[dict, bytes]:
    headers = {"Accept": accept} if accept else {}
    r = h.http_request("127.0.0.1", registry.port, "GET", f"/v2/{repo}/{path}", headers=headers)
    assert r.status == 200, (path, r.status, r.body[:300])
    return json.loads(r.body), r.body


def upload_requests(registry: h.Registry, since: int) -> list[h.RegistryRequest]:
    return [r for r in registry.requests(since)
            if "/blobs/uploads/" in r.uri and r.method in ("POST", "PATCH", "PUT")]


def push(args: list, log: Path, **kw):
    return h.shoalctl(["push", "--plain-http", "--state-dir", str(log.parent / "push-state")] + args,
                      log, **kw)


@pytest.fixture
def model_dir(test_dir) -> tuple[Path, dict]:
    d = test_dir / "model"
    return d, h.build_model_dir(d, WEIGHT)


def test_push_builds_a_modelpack_artifact_and_a_second_push_uploads_nothing(
        registry, test_dir, model_dir):
    src, files = model_dir
    ref = f"{registry.hostport}/models/llama-test:v1"
    out = push(["--chunk-size", "32MiB", str(src), ref], test_dir / "push1.log")
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith(ref + "@sha256:"), out.stdout[-2000:]
    manifest_digest = last.split("@", 1)[1]

    manifest, raw = get_json(registry, "models/llama-test", "manifests/v1",
                             "application/vnd.oci.image.manifest.v1+json")
    assert h.sha256_bytes(raw) == manifest_digest
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"

    # One raw layer per file, with its path, its metadata and the right kind.
    by_path = {l["annotations"]["org.cncf.model.filepath"]: l for l in manifest["layers"]}
    assert set(by_path) == set(files)
    kinds = {
        "config.json": "weight.config", "generation_config.json": "weight.config",
        "tokenizer.json": "weight.config", "README.md": "doc", "LICENSE": "doc",
        "code/modeling.py": "code", "code/run.sh": "code",
        "weights/model-00001-of-00002.safetensors": "weight",
        "weights/small/model-00002-of-00002.safetensors": "weight",
    }
    for rel, (sha, mode) in files.items():
        layer = by_path[rel]
        assert layer["mediaType"] == f"application/vnd.cncf.model.{kinds[rel]}.v1.raw", rel
        assert layer["digest"] == sha
        meta = json.loads(layer["annotations"]["org.cncf.model.file.metadata+json"])
        assert meta["name"] == Path(rel).name
        assert meta["mode"] == mode
        assert meta["size"] == (src / rel).stat().st_size == layer["size"]
        assert meta["typeflag"] == ord("0")
    # Layers in lexicographic path order (reproducible).
    paths = [l["annotations"]["org.cncf.model.filepath"] for l in manifest["layers"]]
    assert paths == sorted(paths)

    # The config passes the ModelPack schema and is filled from config.json.
    config, craw = get_json(registry, "models/llama-test",
                            "blobs/" + manifest["config"]["digest"])
    assert h.sha256_bytes(craw) == manifest["config"]["digest"]
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(config)
    assert config["descriptor"]["family"] == "llama"
    assert config["descriptor"]["name"] == "model"
    assert config["config"]["precision"] == "bfloat16"
    assert config["config"]["format"] == "safetensors"
    assert config["modelfs"] == {"type": "layers",
                                 "diffIds": [l["digest"] for l in manifest["layers"]]}

    # Every blob's bytes are in the registry; the big one went up in 32 MiB chunks.
    for rel, (sha, _) in files.items():
        r = h.http_request("127.0.0.1", registry.port, "HEAD",
                           f"/v2/models/llama-test/blobs/{sha}")
        assert r.status == 200, rel
    big_patches = [r for r in registry.requests() if r.method == "PATCH"]
    assert len(big_patches) >= WEIGHT // (32 * h.MiB)

    # A second push: HEADs only, no upload of any blob, the same manifest.
    mark = registry.log_mark()
    out2 = push([str(src), ref], test_dir / "push2.log")
    assert out2.stdout.strip().splitlines()[-1] == last
    registry.settle()
    assert upload_requests(registry, mark) == []
    heads = [r for r in registry.requests(mark) if r.method == "HEAD" and r.blob_digest()]
    assert len(heads) == len(files) + 1  # every layer and the config
    assert all(r.status == 200 for r in heads)


class CuttingProxy:
    """TCP forwarder to the registry that cuts one connection (both sides)
    once `cut_after` request bytes went through it in total."""

    def __init__(self, upstream_port: int, cut_after: int):
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.sent = 0
        self.cuts = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    def _pump(self, src, dst, upstream_bound):
        try:
            while True:
                b = src.recv(256 * 1024)
                if not b:
                    break
                if upstream_bound:
                    with self.lock:
                        self.sent += len(b)
                        cut = self.cuts == 0 and self.sent >= self.cut_after
                        if cut:
                            self.cuts += 1
                    if cut:
                        break
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


def test_push_cut_mid_upload_finishes_and_the_registry_verifies_it(registry, test_dir, model_dir):
    src, files = model_dir
    proxy = CuttingProxy(registry.port, cut_after=100 * h.MiB)
    try:
        ref = f"127.0.0.1:{proxy.port}/models/cut:v1"
        out = push(["--chunk-size", "16MiB", str(src), ref], test_dir / "push.log")
    finally:
        proxy.stop()
    assert proxy.cuts == 1
    assert "restarted" in out.stdout or "resumed" in out.stdout, out.stdout[-3000:]
    manifest, _ = get_json(registry, "models/cut", "manifests/v1",
                           "application/vnd.oci.image.manifest.v1+json")
    # The registry checked every blob's digest when the upload completed
    # (PUT ?digest=); the big one is whole.
    big = files["weights/model-00001-of-00002.safetensors"][0]
    assert big in [l["digest"] for l in manifest["layers"]]
    r = h.http_stream_digest("127.0.0.1", registry.port, f"/v2/models/cut/blobs/{big}")
    assert r.digest == big and r.length == WEIGHT and r.complete


def test_push_killed_and_rerun_skips_what_the_registry_has(registry, test_dir, model_dir):
    src, files = model_dir
    ref = f"{registry.hostport}/models/killed:v1"
    log = test_dir / "push-killed.log"
    state = test_dir / "push-state"
    argv = [str(h.shoalctl_binary()), "push", "--plain-http", "--state-dir", str(state),
            "--chunk-size", "8MiB", str(src), ref]
    mark = registry.log_mark()
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Kill it once the big blob is a few chunks in.
            h.wait_until(lambda: len([r for r in registry.requests(mark) if r.method == "PATCH"
                                      and r.status == 202]) >= 8, 120)
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
    registry.settle()
    done_before = {r.uri.split("digest=", 1)[1].split("&", 1)[0].replace("%3A", ":")
                   for r in registry.requests(mark)
                   if r.method == "PUT" and "digest=" in r.uri and r.status == 201}
    big = files["weights/model-00001-of-00002.safetensors"][0]
    assert big not in done_before
    assert len(done_before) >= 3  # the files before it in path order went up whole

    mark2 = registry.log_mark()
    out = push(["--chunk-size", "8MiB", str(src), ref], test_dir / "push-rerun.log")
    registry.settle()
    again = upload_requests(registry, mark2)
    finished = {r.uri.split("digest=", 1)[1].split("&", 1)[0].replace("%3A", ":")
                for r in again if r.method == "PUT" and "digest=" in r.uri}
    # Nothing the registry had was sent again; the big blob was finished.
    assert finished.isdisjoint(done_before), (finished, done_before)
    assert big in finished
    posts = [r for r in again if r.method == "POST"]
    assert len(posts) <= len(files) + 1 - len(done_before)
    patched = sum(1 for r in again if r.method == "PATCH")
    print("rerun output:", out.stdout[-1500:])
    print(f"rerun: {patched} PATCHes, {len(posts)} POSTs")
    manifest, _ = get_json(registry, "models/killed", "manifests/v1",
                           "application/vnd.oci.image.manifest.v1+json")
    assert {l["digest"] for l in manifest["layers"]} == {s for s, _ in files.values()}
