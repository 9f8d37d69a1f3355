"""Integration test harness for Shoal: real processes on loopback.

Everything here uses the Python standard library only (Debian's python3).
Each helper owns its processes and directories; the pytest fixtures in
conftest.py make sure they are stopped and removed even when a test fails.

Components:
  Registry        CNCF distribution (`docker-registry serve`), the origin.
                  Its JSON request log is the judge of origin traffic.
  OciLayout       builds OCI image layouts (ModelPack artifact, image-like
                  artifact) that skopeo pushes to the registry.
  Shoald          the node daemon under test.
  Containerd      a private containerd + `ctr content fetch` via hosts.toml.
  CorruptingProxy HTTP/1.1 reverse proxy that can flip one byte of a blob.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable

MiB = 1 << 20
GiB = 1 << 30

# --------------------------------------------------------------------------
# Paths and small helpers
# --------------------------------------------------------------------------


def build_dir() -> Path:
    """The CMake build dir (SHOAL_BUILD_DIR), default build/dev of the repo."""
    env = os.environ.get("SHOAL_BUILD_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "build" / "dev"


def shoald_binary() -> Path:
    env = os.environ.get("SHOALD_BIN")
    if env:
        return Path(env)
    return build_dir() / "daemon" / "shoald" / "shoald"


def shoalctl_binary() -> Path:
    env = os.environ.get("SHOALCTL_BIN")
    if env:
        return Path(env)
    return build_dir() / "daemon" / "ctl" / "shoalctl"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def promtool_check_metrics(text: str) -> tuple[int, str]:
    """`promtool check metrics` on a /metrics body: (exit code, what it printed).
    promtool lints names, HELP/TYPE lines and histogram layout."""
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode()


def metric_families(text: str) -> dict[str, str]:
    """{family name: type} from the # TYPE lines of a /metrics body."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            out[name] = typ.strip()
    return out


def output_root() -> Path:
    env = os.environ.get("SHOAL_TEST_OUTPUT")
    if env:
        return Path(env)
    return Path("/tmp") / f"shoal-test-output-{os.getuid()}"


_handed_out: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bind port 0, read it, close), never one
    this process handed out before (the kernel may offer the same port to two
    calls in a row, e.g. a daemon's mirror and peer ports)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def write_random_file(path: Path | str, size: int, chunk: int = 16 * MiB) -> str:
    """Writes `size` random bytes to path, returns its sha256 digest."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            b = os.urandom(n)
            h.update(b)
            f.write(b)
            left -= n
    return "sha256:" + h.hexdigest()


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def tail(path: Path | str, n: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

try:
    import ctypes
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not Linux/glibc
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """In the child: die with the parent, so a killed test run (e.g. a ctest
    timeout) leaves no registry, containerd or shoald behind."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Proc:
    """A child process in its own session (process group); output to a log."""

    def __init__(self, name: str, argv: list[str], log_path: Path,
                 env: dict | None = None, cwd: Path | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(("### " + " ".join(self.argv) + "\n").encode())
        self._log.flush()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=full_env, cwd=cwd,
            start_new_session=True, preexec_fn=_child_setup)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signals the process; SIGKILLs its group if it does not exit in time.

        Returns the exit status (negative = killed by signal)."""
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        rc = self.popen.wait()
        self._log.close()
        return rc

    def kill9(self) -> int:
        return self.stop(signal.SIGKILL, timeout=10.0)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, n: int = 40) -> str:
        return tail(self.log_path, n)


def run(argv: list, log_path: Path, timeout: float = 300, env: dict | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Runs a command to completion in its own session; output appended to log.

    On timeout the whole process group is killed."""
    argv = [str(a) for a in argv]
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log_path, "ab") as log:
        log.write(("### " + " ".join(argv) + "\n").encode())
        log.flush()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=full_env,
                             start_new_session=True, preexec_fn=_child_setup)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            log.write(out)
            log.write(f"### TIMEOUT after {timeout}s\n".encode())
            raise
        log.write(out)
        log.write(f"### exit {p.returncode}\n".encode())
    cp = subprocess.CompletedProcess(argv, p.returncode, out.decode("utf-8", "replace"), "")
    if check and p.returncode != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(argv)}\n{cp.stdout[-4000:]}")
    return cp


# --------------------------------------------------------------------------
# HTTP client helpers (stdlib http.client; no redirects, no retries)
# --------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    incomplete: bool = False  # body shorter than Content-Length (connection closed)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_request(host: str, port: int, method: str, path: str,
                 headers: dict | None = None, body: bytes | None = None,
                 timeout: float = 60.0) -> Response:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        if method == "HEAD":
            return Response(r.status, r.headers, b"")
        try:
            return Response(r.status, r.headers, r.read())
        except http.client.IncompleteRead as e:
            return Response(r.status, r.headers, e.partial, incomplete=True)
    finally:
        conn.close()


@dataclass
class StreamResult:
    status: int | None
    headers: http.client.HTTPMessage | None
    length: int              # body bytes received
    digest: str              # sha256 of the received bytes
    complete: bool           # the body ended normally (Content-Length reached)
    error: str | None        # exception text if the body was cut or the request failed
    expected_length: int | None = None


def http_stream_digest(host: str, port: int, path: str, headers: dict | None = None,
                       timeout: float = 300.0, method: str = "GET") -> StreamResult:
    """GETs path, hashing the body as it streams; never raises for a cut body."""
    h = hashlib.sha256()
    got = 0
    status = None
    rheaders = None
    expected = None
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        status, rheaders = r.status, r.headers
        cl = r.headers.get("Content-Length")
        expected = int(cl) if cl is not None else None
        while True:
            b = r.read1(1 * MiB) if hasattr(r, "read1") else r.read(1 * MiB)
            if not b:
                break
            h.update(b)
            got += len(b)
        complete = expected is None or got == expected
        err = None if complete else f"short body: {got} of {expected}"
    except (http.client.HTTPException, OSError) as e:
        complete = False
        err = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return StreamResult(status, rheaders, got, "sha256:" + h.hexdigest(), complete, err,
                        expected)


def raw_http(host: str, port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Sends raw bytes; returns the first response (headers and, if it has a
    Content-Length, that much body), or whatever arrived before the peer
    closed or the timeout."""
    out = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except OSError:
            pass
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
                end = out.find(b"\r\n\r\n")
                if end >= 0:
                    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", bytes(out[:end]))
                    if m and len(out) >= end + 4 + int(m.group(1)):
                        break
        except (socket.timeout, OSError):
            pass
    return bytes(out)


def raw_status(resp: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
    return int(m.group(1)) if m else None


def wait_http_ok(host: str, port: int, path: str, timeout: float = 30.0,
                 proc: Proc | None = None, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before ready:\n"
                               f"{proc.log_tail()}")
        try:
            r = http_request(host, port, "GET", path, timeout=2.0)
            if r.status in ok:
                return
            last = f"status {r.status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    extra = f"\n{proc.log_tail()}" if proc else ""
    raise TimeoutError(f"http://{host}:{port}{path} not ready after {timeout}s ({last}){extra}")


# --------------------------------------------------------------------------
# Registry (CNCF distribution 2.8)
# --------------------------------------------------------------------------

BLOB_URI_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/?]+)(?:\?.*)?$")
PIECE_URI_RE = re.compile(r"^/v1/tasks/[0-9a-f]{64}/pieces/\d+$")
MANIFEST_URI_RE = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/?]+)(?:\?.*)?$")


@dataclass
class RegistryRequest:
    method: str
    uri: str
    status: int
    written: int
    useragent: str
    remoteaddr: str
    time: str
    raw: dict = field(repr=False, default_factory=dict)

    def blob_digest(self) -> str | None:
        m = BLOB_URI_RE.match(self.uri)
        return m.group("digest") if m else None


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port>, filesystem storage.

    The log uses distribution's JSON formatter: one line per request with
    msg "response completed" and fields http.request.method,
    http.request.uri, http.response.status, http.response.written (body bytes
    written, which for a blob GET is the body bytes read by the client, also
    for Range requests and for aborted ones). The registry does not log
    request headers, so Range headers are not visible here.
    """

    def __init__(self, workdir: Path, htpasswd: tuple[str, str] | None = None,
                 name: str = "registry"):
        self.workdir = Path(workdir) / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.storage.mkdir(exist_ok=True)
        self.log_path = self.workdir / "registry.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user, self.password = htpasswd if htpasswd else (None, None)
        auth = ""
        if htpasswd:
            hp = self.workdir / "htpasswd"
            out = subprocess.run(["htpasswd", "-Bbn", htpasswd[0], htpasswd[1]],
                                 check=True, capture_output=True).stdout
            hp.write_bytes(out)
            auth = (f"auth:\n  htpasswd:\n    realm: shoal-test\n"
                    f"    path: {hp}\n")
        self.config_path = self.workdir / "config.yml"
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  formatter: json\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: shoal-test-secret\n"
            + auth)
        self.proc: Proc | None = None

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def auth_header(self) -> dict:
        if self.user is None:
            return {}
        return {"Authorization": basic_auth(self.user, self.password)}

    def start(self, timeout: float = 30.0) -> "Registry":
        ok = (200, 401) if self.user else (200,)
        for attempt in range(3):
            self.proc = Proc("registry", ["docker-registry", "serve", self.config_path],
                             self.log_path)
            try:
                wait_http_ok("127.0.0.1", self.port, "/v2/", timeout, self.proc, ok=ok)
                return self
            except RuntimeError:
                # free_port() finds a port in the ephemeral range, where another
                # test's outgoing connection can take it before the registry binds
                if attempt == 2 or self.proc.alive() or \
                        "address already in use" not in self.proc.log_tail():
                    raise
                old = f"addr: 127.0.0.1:{self.port}\n"
                self.port = free_port()
                self.config_path.write_text(self.config_path.read_text().replace(
                    old, f"addr: 127.0.0.1:{self.port}\n"))
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(signal.SIGTERM, timeout=5.0)

    # ---- log parsing -----------------------------------------------------

    def requests(self, since: int = 0) -> list[RegistryRequest]:
        """Completed requests from the log, starting at byte offset `since`."""
        out = []
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return out
        for line in data.splitlines():
            if not line.startswith(b"{"):
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "http.request.uri" not in rec or "http.response.status" not in rec:
                continue
            out.append(RegistryRequest(
                method=rec.get("http.request.method", ""),
                uri=rec.get("http.request.uri", ""),
                status=int(rec.get("http.response.status", 0)),
                written=int(rec.get("http.response.written", 0)),
                useragent=rec.get("http.request.useragent", ""),
                remoteaddr=rec.get("http.request.remoteaddr", ""),
                time=rec.get("time", ""),
                raw=rec))
        return out

    def log_mark(self) -> int:
        """Current log size; pass as `since` to count only later requests."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def blob_gets(self, digest: str, since: int = 0) -> list[RegistryRequest]:
        return [r for r in self.requests(since)
                if r.method == "GET" and r.blob_digest() == digest]

    def blob_body_bytes(self, digest: str, since: int = 0) -> int:
        """Sum of body bytes the registry wrote for GET /v2/*/blobs/<digest>."""
        return sum(r.written for r in self.blob_gets(digest, since))

    def all_blob_body_bytes(self, since: int = 0) -> int:
        return sum(r.written for r in self.requests(since)
                   if r.method == "GET" and r.blob_digest() is not None)

    def settle(self, timeout: float = 5.0) -> None:
        """Waits until the log stops growing (requests in flight get logged)."""
        last = -1
        stable_since = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cur = self.log_mark()
            if cur != last:
                last = cur
                stable_since = time.monotonic()
            elif time.monotonic() - stable_since > 0.3:
                return
            time.sleep(0.05)

    # ---- push helpers (registry HTTP API) --------------------------------

    def _conn(self, timeout=300.0):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def push_blob_file(self, repo: str, path: Path | str, digest: str | None = None) -> str:
        """Monolithic upload (POST + PUT ?digest=) of a file; returns digest."""
        path = Path(path)
        if digest is None:
            digest = sha256_file(path)
        size = path.stat().st_size
        c = self._conn()
        try:
            c.request("POST", f"/v2/{repo}/blobs/uploads/",
                      headers={"Content-Length": "0", **self.auth_header()})
            r = c.getresponse()
            r.read()
            if r.status != 202:
                raise RuntimeError(f"blob upload POST: {r.status}")
            loc = r.headers["Location"]
        finally:
            c.close()
        u = urllib.parse.urlsplit(loc)
        q = u.query + ("&" if u.query else "") + "digest=" + urllib.parse.quote(digest)
        target = u.path + "?" + q
        c = self._conn()
        try:
            with open(path, "rb") as f:
                c.request("PUT", target, body=f, headers={
                    "Content-Length": str(size),
                    "Content-Type": "application/octet-stream", **self.auth_header()})
                r = c.getresponse()
                r.read()
            if r.status != 201:
                raise RuntimeError(f"blob upload PUT: {r.status}")
        finally:
            c.close()
        return digest

    def push_blob_bytes(self, repo: str, data: bytes) -> str:
        digest = sha256_bytes(data)
        c = self._conn()
        try:
            c.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data,
                      headers={"Content-Type": "application/octet-stream",
                               **self.auth_header()})
            r = c.getresponse()
            r.read()
            if r.status != 201:
                raise RuntimeError(f"blob monolithic POST: {r.status}")
        finally:
            c.close()
        return digest

    def push_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> Response:
        return http_request("127.0.0.1", self.port, "PUT", f"/v2/{repo}/manifests/{ref}",
                            headers={"Content-Type": media_type, **self.auth_header()},
                            body=data)

    def push_random_blob(self, repo: str, size: int, workdir: Path) -> tuple[str, Path]:
        """Writes `size` random bytes to a file, pushes it; returns (digest, file)."""
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"blob-{size}-{os.urandom(4).hex()}.bin"
        digest = write_random_file(path, size)
        self.push_blob_file(repo, path, digest)
        return digest, path

    def get_manifest(self, repo: str, ref: str) -> Response:
        return http_request("127.0.0.1", self.port, "GET", f"/v2/{repo}/manifests/{ref}",
                            headers={"Accept": ", ".join(MANIFEST_TYPES),
                                     **self.auth_header()})


MANIFEST_TYPES = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
]

# --------------------------------------------------------------------------
# OCI layouts and artifacts
# --------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODEL_WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
MODEL_WEIGHT_CONFIG_TAR = "application/vnd.cncf.model.weight.config.v1.tar"
FILEPATH_ANNOTATION = "org.cncf.model.filepath"


@dataclass
class Blob:
    digest: str
    size: int
    media_type: str
    path: Path
    annotations: dict | None = None

    def descriptor(self) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = self.annotations
        return d


@dataclass
class Artifact:
    layout: Path
    tag: str
    manifest: dict
    manifest_bytes: bytes
    manifest_digest: str
    config: Blob
    layers: list[Blob]

    @property
    def media_type(self) -> str:
        return self.manifest["mediaType"]

    @property
    def blobs(self) -> list[Blob]:
        return [self.config] + self.layers

    def all_digests(self) -> list[str]:
        return [self.manifest_digest] + [b.digest for b in self.blobs]

    def blob(self, digest: str) -> Blob:
        for b in self.blobs:
            if b.digest == digest:
                return b
        raise KeyError(digest)


class OciLayout:
    """Writes an OCI image layout directory (oci-layout, index.json, blobs/)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.index_entries: list[dict] = []

    def blob_path(self, digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return self.root / "blobs" / algo / hexd

    def add_bytes(self, data: bytes, media_type: str, annotations=None) -> Blob:
        d = sha256_bytes(data)
        p = self.blob_path(d)
        p.write_bytes(data)
        return Blob(d, len(data), media_type, p, annotations)

    def add_random(self, size: int, media_type: str, annotations=None) -> Blob:
        tmp = self.root / f"tmp-{os.urandom(6).hex()}"
        d = write_random_file(tmp, size)
        p = self.blob_path(d)
        os.replace(tmp, p)
        return Blob(d, size, media_type, p, annotations)

    def add_manifest(self, manifest: dict, tag: str, config: Blob, layers: list[Blob]) -> Artifact:
        data = json.dumps(manifest, indent=2).encode()
        d = sha256_bytes(data)
        self.blob_path(d).write_bytes(data)
        entry = {"mediaType": manifest["mediaType"], "digest": d, "size": len(data),
                 "annotations": {"org.opencontainers.image.ref.name": tag}}
        if "artifactType" in manifest:
            entry["artifactType"] = manifest["artifactType"]
        self.index_entries.append(entry)
        (self.root / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index_entries},
            indent=2))
        return Artifact(self.root, tag, manifest, data, d, config, layers)


def make_tar(files: dict[str, bytes], gzipped: bool = False) -> bytes:
    """A deterministic tar (optionally gzip) of the given files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1700000000
            ti.mode = 0o644
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    if gzipped:
        return gzip.compress(raw, mtime=0)
    return raw


def build_modelpack(root: Path, weight_size: int = 256 * MiB, tag: str = "v1",
                    name: str = "shoal-test-model") -> Artifact:
    """A ModelPack artifact: raw weight layer + weight-config tar layer."""
    lay = OciLayout(root)
    weight = lay.add_random(weight_size, MODEL_WEIGHT_RAW,
                            {FILEPATH_ANNOTATION: "model.safetensors"})
    tar_files = {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"],
                                   "hidden_size": 64, "nonce": os.urandom(8).hex()}).encode(),
        "tokenizer_config.json": b'{"model_max_length": 2048}\n',
    }
    tar = lay.add_bytes(make_tar(tar_files), MODEL_WEIGHT_CONFIG_TAR,
                        {FILEPATH_ANNOTATION: "config"})
    cfg_obj = {
        "descriptor": {
            "createdAt": "2025-01-01T00:00:00Z",
            "authors": ["shoal-tests@example.com"],
            "family": "shoal-test",
            "name": name,
            "version": "1.0",
            "licenses": ["Apache-2.0"],
        },
        "config": {
            "architecture": "transformer",
            "format": "safetensors",
            "paramSize": "1m",
            "precision": "float16",
        },
        "modelfs": {
            "type": "layers",
            # raw and uncompressed tar layers: diffId == digest
            "diffIds": [weight.digest, tar.digest],
        },
    }
    config = lay.add_bytes(json.dumps(cfg_obj, indent=2).encode(), MODEL_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": MODEL_ARTIFACT,
        "config": config.descriptor(),
        "layers": [weight.descriptor(), tar.descriptor()],
        "annotations": {"org.opencontainers.image.created": "2025-01-01T00:00:00Z"},
    }
    return lay.add_manifest(manifest, tag, config, [weight, tar])


def build_image(root: Path, tag: str = "v1") -> Artifact:
    """A small ordinary OCI image: image config + one tar+gzip layer."""
    lay = OciLayout(root)
    raw_tar = make_tar({"hello.txt": b"hello from shoal " + os.urandom(8).hex().encode() + b"\n",
                        "etc/os-release": b"ID=shoaltest\n"})
    diff_id = sha256_bytes(raw_tar)
    layer = lay.add_bytes(gzip.compress(raw_tar, mtime=0),
                          "application/vnd.oci.image.layer.v1.tar+gzip")
    cfg = {"architecture": "amd64", "os": "linux",
           "config": {"Cmd": ["/hello"]},
           "rootfs": {"type": "layers", "diff_ids": [diff_id]},
           "history": [{"created": "2025-01-01T00:00:00Z", "created_by": "shoal test"}]}
    config = lay.add_bytes(json.dumps(cfg).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": config.descriptor(), "layers": [layer.descriptor()]}
    return lay.add_manifest(manifest, tag, config, [layer])


def read_oci_layout(root: Path, tag: str | None = None) -> tuple[dict, bytes, str]:
    """Returns (manifest, manifest bytes, manifest digest) from a layout."""
    index = json.loads((Path(root) / "index.json").read_text())
    entries = index["manifests"]
    if tag is not None:
        entries = [e for e in entries
                   if e.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    assert len(entries) == 1, f"expected one manifest for tag {tag} in {index}"
    d = entries[0]["digest"]
    data = (Path(root) / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()
    return json.loads(data), data, d


# --------------------------------------------------------------------------
# skopeo
# --------------------------------------------------------------------------

def skopeo_copy(src: str, dest: str, log_path: Path, src_creds: str | None = None,
                dest_creds: str | None = None, timeout: float = 600,
                check: bool = True, extra: list[str] | None = None):
    """`skopeo copy --preserve-digests` between transports (tls off for both)."""
    argv = ["skopeo", "--insecure-policy", "copy", "--preserve-digests",
            "--src-tls-verify=false", "--dest-tls-verify=false", "--retry-times", "0"]
    if src_creds:
        argv += ["--src-creds", src_creds]
    else:
        argv += ["--src-no-creds"] if src.startswith("docker://") else []
    if dest_creds:
        argv += ["--dest-creds", dest_creds]
    else:
        argv += ["--dest-no-creds"] if dest.startswith("docker://") else []
    argv += extra or []
    argv += [src, dest]
    # keep skopeo away from any auth file or registries.conf of the host
    env = {"REGISTRY_AUTH_FILE": str(Path(log_path).parent / "skopeo-auth.json")}
    return run(argv, log_path, timeout=timeout, env=env, check=check)


def push_modelpack(registry: Registry, workdir: Path, repo: str, weight_size: int = 256 * MiB,
                   tag: str = "v1") -> Artifact:
    """Builds a ModelPack layout under workdir and pushes it with skopeo."""
    art = build_modelpack(Path(workdir) / f"layout-{repo.replace('/', '_')}", weight_size, tag)
    push_artifact(art, registry, repo, Path(workdir) / "skopeo.log")
    return art


def push_image(registry: Registry, workdir: Path, repo: str, tag: str = "v1") -> Artifact:
    art = build_image(Path(workdir) / f"layout-{repo.replace('/', '_')}", tag)
    push_artifact(art, registry, repo, Path(workdir) / "skopeo.log")
    return art


def push_artifact(art: Artifact, registry: Registry, repo: str, log_path: Path) -> None:
    creds = f"{registry.user}:{registry.password}" if registry.user else None
    skopeo_copy(f"oci:{art.layout}:{art.tag}",
                f"docker://{registry.hostport}/{repo}:{art.tag}", log_path,
                dest_creds=creds)
    # the registry must now serve exactly the manifest we built
    r = registry.get_manifest(repo, art.tag)
    assert r.status == 200, r
    assert r.body == art.manifest_bytes, "skopeo changed the manifest"
    assert r.header("Docker-Content-Digest") == art.manifest_digest


# --------------------------------------------------------------------------
# shoald
# --------------------------------------------------------------------------

def parse_metrics(text: str) -> dict:
    """Prometheus text → {name: value, 'name{labels}': value}.

    Values of the same name with different labels are also summed under the
    bare name, so m['shoal_mirror_requests_total'] is the total."""
    out: dict[str, float] = {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        name, labels, val = m.group(1), m.group(2), m.group(3)
        try:
            v = float(val)
        except ValueError:
            continue
        if labels:
            out[name + labels] = v
            sums[name] = sums.get(name, 0.0) + v
        else:
            out[name] = v
    for k, v in sums.items():
        out.setdefault(k, v)
    return out


def metric_with_labels(metrics: dict, name: str, **labels) -> float:
    """Sum of `name` series whose labels include all of `labels`."""
    total = 0.0
    for k, v in metrics.items():
        if not k.startswith(name + "{"):
            continue
        ls = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', k[len(name):]))
        if all(ls.get(a) == str(b) for a, b in labels.items()):
            total += v
    return total


class _Daemon:
    """A restartable process of ours (shoald, shoal-scheduler)."""

    proc: "Proc | None" = None

    def _end(self, how) -> int:
        """Ends the process with how(proc); returns its exit status."""
        if self.proc is None:
            return 0
        rc = how(self.proc)
        self.proc = None
        self._stopped()
        return rc

    def _stopped(self) -> None:
        """Clean-up after the process ended."""

    def kill9(self) -> int:
        return self._end(lambda p: p.kill9())


class Shoald(_Daemon):
    """One shoald process; data dir survives restarts (start/stop again)."""

    def __init__(self, workdir: Path, name: str = "shoald", extra_args: list[str] | None = None,
                 insecure: Iterable[str] = (), default_registry: str | None = None,
                 data_dir: Path | None = None):
        self.name = name
        self.workdir = Path(workdir) / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.mirror_port = free_port()
        self.admin_port = free_port()
        self.peer_port = free_port()
        # unix socket paths are limited to ~107 bytes: keep it short
        self.api_socket = Path(f"/tmp/shoal-{os.getpid()}-{os.urandom(4).hex()}.sock")
        self.insecure = list(insecure)
        self.default_registry = default_registry
        self.extra_args = list(extra_args or [])
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def mirror(self) -> str:
        return f"127.0.0.1:{self.mirror_port}"

    def argv(self) -> list[str]:
        a = [str(shoald_binary()),
             "--data-dir", str(self.data_dir),
             "--mirror-listen", self.mirror,
             "--admin-listen", f"127.0.0.1:{self.admin_port}",
             "--peer-listen", f"127.0.0.1:{self.peer_port}",
             "--api-socket", str(self.api_socket),
             "--log-level", os.environ.get("SHOAL_LOG_LEVEL", "debug")]
        for r in self.insecure:
            a += ["--insecure-registry", r]
        if self.default_registry:
            a += ["--default-registry", self.default_registry]
        return a + self.extra_args

    def start(self, timeout: float = 30.0) -> "Shoald":
        if not shoald_binary().exists():
            raise FileNotFoundError(f"shoald binary not built: {shoald_binary()}")
        self.starts += 1
        self.proc = Proc(self.name, self.argv(), self.workdir / f"{self.name}.{self.starts}.log")
        wait_http_ok("127.0.0.1", self.admin_port, "/readyz", timeout, self.proc)
        return self

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM; returns the exit status (0 = graceful)."""
        return self._end(lambda p: p.stop(signal.SIGTERM, timeout=timeout))

    def _stopped(self) -> None:
        try:
            self.api_socket.unlink()
        except FileNotFoundError:
            pass

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def log_tail(self, n: int = 60) -> str:
        return self.proc.log_tail(n) if self.proc else ""

    # ---- admin ------------------------------------------------------------

    def admin(self, path: str, timeout: float = 5.0) -> Response:
        return http_request("127.0.0.1", self.admin_port, "GET", path, timeout=timeout)

    def metrics_text(self) -> str:
        r = self.admin("/metrics")
        assert r.status == 200, f"/metrics: {r.status}"
        return r.body.decode()

    def metrics(self) -> dict:
        return parse_metrics(self.metrics_text())

    def metric(self, name: str, default: float = 0.0) -> float:
        return self.metrics().get(name, default)

    def healthy(self) -> bool:
        try:
            return (self.alive() and self.admin("/healthz").status == 200
                    and self.admin("/readyz").status == 200)
        except OSError:
            return False

    # ---- mirror -----------------------------------------------------------

    def request(self, method: str, path: str, headers: dict | None = None,
                timeout: float = 300.0) -> Response:
        return http_request("127.0.0.1", self.mirror_port, method, path, headers, timeout=timeout)

    def get_blob(self, repo: str, digest: str, ns: str | None = None,
                 headers: dict | None = None, timeout: float = 600.0) -> StreamResult:
        return http_stream_digest("127.0.0.1", self.mirror_port, blob_path(repo, digest, ns),
                                  headers, timeout)

    def content_files(self) -> list[Path]:
        c = self.data_dir / "content"
        if not c.exists():
            return []
        return sorted(p for p in c.rglob("*") if p.is_file())


def blob_path(repo: str, digest: str, ns: str | None = None) -> str:
    p = f"/v2/{repo}/blobs/{digest}"
    return p + (f"?ns={ns}" if ns else "")


def manifest_path(repo: str, ref: str, ns: str | None = None) -> str:
    p = f"/v2/{repo}/manifests/{ref}"
    return p + (f"?ns={ns}" if ns else "")


# --------------------------------------------------------------------------
# containerd + ctr
# --------------------------------------------------------------------------


class Containerd:
    """A private containerd (own root/state/socket, CRI and snapshotters off)."""

    DISABLED = [
        "io.containerd.grpc.v1.cri",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.overlayfs",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
        "io.containerd.internal.v1.opt",
    ]

    def __init__(self, workdir: Path, name: str = "containerd"):
        self.workdir = Path(workdir) / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.workdir / "root"
        self.state = Path(f"/tmp/shoal-ctd-{os.getpid()}-{os.urandom(4).hex()}")
        self.socket = self.state / "c.sock"
        self.hosts_dir = self.workdir / "hosts"
        self.hosts_dir.mkdir(exist_ok=True)
        self.log_path = self.workdir / "containerd.log"
        self.ctr_log = self.workdir / "ctr.log"
        self.config = self.workdir / "config.toml"
        disabled = ", ".join(f'"{p}"' for p in self.DISABLED)
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            f"disabled_plugins = [{disabled}]\n"
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.state}/t.sock"\n'
            "[debug]\n"
            '  level = "debug"\n'
            f'  address = "{self.state}/d.sock"\n'
            "[metrics]\n"
            '  address = ""\n')
        self.proc: Proc | None = None

    def start(self, timeout: float = 30.0) -> "Containerd":
        self.state.mkdir(parents=True, exist_ok=True)
        self.proc = Proc("containerd", ["containerd", "--config", self.config], self.log_path)

        def ready():
            if not self.proc.alive():
                raise RuntimeError(f"containerd exited:\n{self.proc.log_tail()}")
            if not self.socket.exists():
                return False
            return self.ctr(["version"], check=False, timeout=10).returncode == 0
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"containerd not ready:\n{self.proc.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(signal.SIGTERM, timeout=10)
            self.proc = None
        shutil.rmtree(self.state, ignore_errors=True)

    def ctr(self, args: list[str], check: bool = True, timeout: float = 600,
            namespace: str = "shoaltest") -> subprocess.CompletedProcess:
        return run(["ctr", "--address", self.socket, "--namespace", namespace] + args,
                   self.ctr_log, timeout=timeout, check=check)

    def set_mirror(self, registry_hostport: str, mirror_hostport: str | None,
                   fallback: bool = True) -> None:
        """hosts.toml for the registry: upstream over http, optional mirror.

        containerd tries the mirror first and falls back to `server` on any
        error. fallback=False points `server` at a closed port, so a pull
        succeeds only if everything came through the mirror (containerd still
        sends ns=<registry_hostport> to the mirror)."""
        d = self.hosts_dir / registry_hostport
        d.mkdir(parents=True, exist_ok=True)
        server = registry_hostport if fallback else "127.0.0.1:1"
        text = f'server = "http://{server}"\n'
        if mirror_hostport:
            text += (f'\n[host."http://{mirror_hostport}"]\n'
                     '  capabilities = ["pull", "resolve"]\n')
        (d / "hosts.toml").write_text(text)

    def fetch(self, ref: str, user: str | None = None, check: bool = True,
              timeout: float = 600) -> subprocess.CompletedProcess:
        args = ["content", "fetch", "--hosts-dir", str(self.hosts_dir), "--plain-http",
                "--all-platforms"]
        if user:
            args += ["--user", user]
        return self.ctr(args + [ref], check=check, timeout=timeout)

    def content_digests(self) -> dict[str, int]:
        """digest → size of everything in the content store (`ctr content ls`)."""
        out = self.ctr(["content", "ls"]).stdout
        res = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith("sha256:"):
                res[parts[0]] = parse_size(parts[1])
        return res

    def content_bytes(self, digest: str) -> bytes:
        """Blob bytes as stored by containerd (its content store layout)."""
        return (self.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
                / digest.split(":", 1)[1]).read_bytes()

    def content_file(self, digest: str) -> Path:
        return (self.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
                / digest.split(":", 1)[1])

    def content_rm(self, digests: list[str]) -> None:
        self.ctr(["content", "rm"] + list(digests))


_SIZE_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2,
               "GB": 1000**3, "GiB": 1024**3}


def parse_size(s: str) -> int:
    m = re.match(r"^([0-9.]+)\s*([A-Za-z]*)$", s)
    if not m:
        return -1
    return int(float(m.group(1)) * _SIZE_UNITS.get(m.group(2) or "B", 1))


# --------------------------------------------------------------------------
# Corrupting reverse proxy
# --------------------------------------------------------------------------

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailers", "transfer-encoding", "upgrade"}


class _LoopbackServer:
    """A threaded HTTP server on 127.0.0.1:<free port> for test-only peers."""

    def _serve(self, handler) -> None:
        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CorruptingProxy(_LoopbackServer):
    """HTTP/1.1 reverse proxy to an upstream; can flip one byte of a blob body.

    While `corrupt` is on, GET responses for /v2/*/blobs/<digest> (digest in
    `digests`, or any blob if `digests` is empty) have the byte at absolute
    offset size//2 XORed with 0xFF; headers (Content-Length,
    Docker-Content-Digest, ...) are passed unchanged. Bodies are streamed.
    `requests` records (method, path, Range header, status) of each request.
    With `pace` set (bytes per second), bodies are sent at that rate, so what
    the client has read is what the proxy has sent; `sever()` then drops every
    body being sent, mid-stream, and refuses new ones (an origin that dies).
    """

    def __init__(self, upstream_host: str, upstream_port: int, workdir: Path | None = None):
        self.upstream = (upstream_host, upstream_port)
        self.corrupt = False
        self.digests: set[str] = set()
        # flip a byte in every piece a daemon's piece server sends through us
        self.corrupt_pieces = False
        self.requests: list[tuple[str, str, str | None, int]] = []
        self.corrupted_responses = 0
        self.pace: int | None = None
        self._severed = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # quiet
                pass

            def _proxy(self):
                if proxy._severed.is_set():
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                up = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    up.request(self.command, self.path, body=body, headers=hdrs)
                    r = up.getresponse()
                except OSError:
                    self.send_error(502)
                    return
                with proxy._lock:
                    proxy.requests.append((self.command, self.path,
                                           self.headers.get("Range"), r.status))
                self.send_response_only(r.status, r.reason)
                chunked_upstream = r.getheader("Content-Length") is None and \
                    self.command != "HEAD" and r.status not in (204, 304)
                buffered = r.read() if chunked_upstream else None
                for k, v in r.getheaders():
                    if k.lower() in _HOP:
                        continue
                    if buffered is not None and k.lower() == "content-length":
                        continue
                    self.send_header(k, v)
                if buffered is not None:
                    self.send_header("Content-Length", str(len(buffered)))
                self.end_headers()
                if self.command == "HEAD":
                    up.close()
                    return
                if buffered is not None:
                    self.wfile.write(buffered)
                    up.close()
                    return
                flip_at = None
                if (proxy.corrupt_pieces and self.command == "GET" and r.status == 200
                        and PIECE_URI_RE.match(urllib.parse.urlsplit(self.path).path)):
                    flip_at = int(r.getheader("Content-Length")) // 2
                    with proxy._lock:
                        proxy.corrupted_responses += 1
                m = BLOB_URI_RE.match(urllib.parse.urlsplit(self.path).path)
                if (proxy.corrupt and self.command == "GET" and m and r.status in (200, 206)
                        and (not proxy.digests or m.group("digest") in proxy.digests)):
                    start, total = 0, int(r.getheader("Content-Length"))
                    cr = r.getheader("Content-Range")
                    if r.status == 206 and cr:
                        mm = re.match(r"bytes (\d+)-(\d+)/(\d+)", cr)
                        if mm:
                            start, total = int(mm.group(1)), int(mm.group(3))
                    target = total // 2
                    clen = int(r.getheader("Content-Length"))
                    if start <= target < start + clen:
                        flip_at = target - start
                        with proxy._lock:
                            proxy.corrupted_responses += 1
                pos = 0
                step = 256 * 1024 if proxy.pace is None else max(1024, proxy.pace // 20)
                try:
                    while True:
                        b = r.read(step)
                        if not b:
                            break
                        if proxy.pace is not None:
                            time.sleep(len(b) / proxy.pace)
                        if proxy._severed.is_set():
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if flip_at is not None and pos <= flip_at < pos + len(b):
                            ba = bytearray(b)
                            ba[flip_at - pos] ^= 0xFF
                            b = bytes(ba)
                        self.wfile.write(b)
                        pos += len(b)
                except OSError:
                    self.close_connection = True
                finally:
                    up.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _proxy

        self._serve(Handler)

    def sever(self) -> None:
        self._severed.set()


class FakeUpstream(_LoopbackServer):
    """A minimal static 'registry' for responses a real registry won't give.

    routes: {path (without query): (status, headers dict, body bytes)}; a body
    is sent with Content-Length unless headers has 'Transfer-Encoding: chunked'.
    GET /v2/ answers 200 {}; anything else 404. `requests` logs
    (method, path, headers dict)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, dict, bytes]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def _serve(self):
                path = urllib.parse.urlsplit(self.path).path
                upstream.requests.append((self.command, self.path, dict(self.headers.items())))
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                if path == "/v2/" or path == "/v2":
                    status, headers, body = 200, {"Content-Type": "application/json"}, b"{}"
                else:
                    status, headers, body = upstream.routes.get(
                        path, (404, {"Content-Type": "application/json"},
                               b'{"errors":[{"code":"NAME_UNKNOWN","message":"not found"}]}'))
                headers = dict(headers)
                headers.setdefault("Docker-Distribution-Api-Version", "registry/2.0")
                chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not chunked:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                try:
                    if chunked:
                        for i in range(0, len(body), 64 * 1024):
                            part = body[i:i + 64 * 1024]
                            self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self.wfile.write(body)
                except OSError:
                    self.close_connection = True

            do_GET = do_HEAD = _serve

        self._serve(Handler)


# --------------------------------------------------------------------------
# shoal-scheduler and swarms
# --------------------------------------------------------------------------


def scheduler_binary() -> Path:
    env = os.environ.get("SHOAL_SCHEDULER_BIN")
    if env:
        return Path(env)
    return build_dir() / "scheduler" / "shoal-scheduler"


class Scheduler(_Daemon):
    """One shoal-scheduler on 127.0.0.1:<free ports>; restartable on the same ports."""

    def __init__(self, workdir: Path, name: str = "scheduler",
                 extra_args: list[str] | None = None):
        self.name = name
        self.workdir = Path(workdir) / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = list(extra_args or [])
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "Scheduler":
        if not scheduler_binary().exists():
            raise FileNotFoundError(f"shoal-scheduler not built: {scheduler_binary()}")
        self.starts += 1
        argv = [str(scheduler_binary()), "--listen", self.addr,
                "--http-listen", f"127.0.0.1:{self.http_port}",
                "--log-level", os.environ.get("SHOAL_LOG_LEVEL", "debug")] + self.extra_args
        self.proc = Proc(self.name, argv, self.workdir / f"{self.name}.{self.starts}.log")
        wait_http_ok("127.0.0.1", self.http_port, "/healthz", timeout, self.proc)
        # the gRPC port is bound by then too, but make sure
        wait_until(lambda: port_open(self.port), timeout)
        return self

    def stop(self, timeout: float = 10.0) -> int:
        return self._end(lambda p: p.stop(signal.SIGTERM, timeout=timeout))

    def metrics_text(self) -> str:
        r = http_request("127.0.0.1", self.http_port, "GET", "/metrics", timeout=5.0)
        assert r.status == 200, f"scheduler /metrics: {r.status}"
        return r.body.decode()

    def metrics(self) -> dict:
        return parse_metrics(self.metrics_text())


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def swarm_args(sched: "Scheduler | list[Scheduler]", extra: list[str] | None = None) -> list[str]:
    scheds = sched if isinstance(sched, list) else [sched]
    return ["--scheduler", ",".join(s.addr for s in scheds)] + list(extra or [])


def peer_bytes(d: Shoald) -> float:
    """Verified piece bytes a daemon got from parents (its own counter)."""
    return d.metrics().get("shoal_peer_bytes_total", 0.0)


# --------------------------------------------------------------------------
# shoalctl and model directories (push, preheat)
# --------------------------------------------------------------------------


def shoalctl_binary() -> Path:
    env = os.environ.get("SHOAL_SHOALCTL_BIN")
    if env:
        return Path(env)
    return build_dir() / "daemon" / "ctl" / "shoalctl"


def shoalctl(args: list, log_path: Path, timeout: float = 600, check: bool = True,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs shoalctl to completion; stdout and stderr together in .stdout."""
    return run([shoalctl_binary()] + list(args), log_path, timeout=timeout, env=env, check=check)


def build_model_dir(root: Path, weight_size: int = 256 * MiB) -> dict[str, tuple[str, int]]:
    """A Hugging Face-like model directory with nested paths and varied modes.

    Returns {relative path: (sha256 hex, mode)} of every file."""
    root = Path(root)
    files = {
        "config.json": json.dumps({"model_type": "llama", "torch_dtype": "bfloat16",
                                   "architectures": ["LlamaForCausalLM"],
                                   "hidden_size": 4096}).encode(),
        "generation_config.json": b'{"do_sample": true}\n',
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"vocab": {"a": 1}}}).encode(),
        "README.md": b"# test model\n",
        "LICENSE": b"Apache-2.0\n",
        "code/modeling.py": b"print('hello')\n",
        "code/run.sh": b"#!/bin/sh\necho run\n",
        "weights/small/model-00002-of-00002.safetensors": os.urandom(3 * MiB + 17),
    }
    modes = {"code/run.sh": 0o755, "README.md": 0o600, "LICENSE": 0o444}
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    write_random_file(root / "weights" / "model-00001-of-00002.safetensors", weight_size)
    for rel, mode in modes.items():
        os.chmod(root / rel, mode)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = (sha256_file(p), p.stat().st_mode & 0o7777)
    return out


def dir_contents(root: Path, skip=(".shoal-pull.json",)) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256 hex, mode)} of every regular file under root
    (shoalctl pull's marker file left out)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): (sha256_file(p), p.stat().st_mode & 0o7777)
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).as_posix() not in skip}


def as_pulled(files: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """What `shoalctl pull` lays out for pushed files: the same bytes and
    modes, without write bits (raw layers are read-only hard links from the
    immutable cache; daemon/model/README.md)."""
    return {rel: (sha, mode & ~0o222) for rel, (sha, mode) in files.items()}


# --------------------------------------------------------------------------
# Models: ModelPack trees, the local API (unix socket), shoalctl
# --------------------------------------------------------------------------

MODEL_MTIME = 1735689600  # 2025-01-01T00:00:00Z, in the file metadata annotations
TAR_MTIME = 1700000000


def _model_types(legacy: bool) -> dict:
    ns = "cnai" if legacy else "cncf"
    return {
        "artifact": f"application/vnd.{ns}.model.manifest.v1+json",
        "config": f"application/vnd.{ns}.model.config.v1+json",
        "layer": lambda kind, fmt: f"application/vnd.{ns}.model.{kind}.v1.{fmt}",
        "filepath": f"org.{ns}.model.filepath",
        "metadata": f"org.{ns}.model.file.metadata+json",
    }


def tar_of_tree(src: Path, top: str, fmt: str = "tar") -> bytes:
    """A tar of src/top (directories and files in lexical order, modes kept,
    mtime TAR_MTIME), compressed per fmt: tar, tar+gzip, tar+zstd."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        paths = [src / top] + sorted((src / top).rglob("*"))
        for p in paths:
            rel = p.relative_to(src).as_posix()
            st = p.lstat()
            ti = tarfile.TarInfo(rel)
            ti.mtime = TAR_MTIME
            ti.mode = st.st_mode & 0o7777
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if p.is_symlink():
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(p)
                tf.addfile(ti)
            elif p.is_dir():
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                data = p.read_bytes()
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    if fmt == "tar+gzip":
        return gzip.compress(raw, mtime=0)
    if fmt == "tar+zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=raw, stdout=subprocess.PIPE,
                              check=True).stdout
    return raw


def _write(path: Path, data: bytes, mode: int, mtime: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def build_model_tree(root: Path, src: Path, weight_sizes=(24 * MiB, 8 * MiB), tag: str = "v1",
                     legacy: bool = False, extra_tar: tuple[str, bytes, str] | None = None
                     ) -> Artifact:
    """Writes `src`, a model directory (what a pull must reproduce), and an OCI
    layout of it: raw layers (two weight shards, a nested tokenizer file, an
    executable script, with file metadata: mode, mtime), a `config/` tar layer
    with nested directories, `docs/` as tar+gzip, `code/` as tar+zstd.
    legacy=True uses the older vnd.cnai / org.cnai names throughout.
    extra_tar=(kind, blob bytes, fmt) adds one more tar layer (e.g. a malicious one)."""
    t = _model_types(legacy)
    src = Path(src)
    src.mkdir(parents=True, exist_ok=True)
    lay = OciLayout(root)
    layers: list[Blob] = []
    raws = [(f"model-0000{i + 1}-of-0000{len(weight_sizes)}.safetensors", s, 0o444, "weight")
            for i, s in enumerate(weight_sizes)]
    raws += [("tokenizer/tokenizer.json", 3000, 0o444, "weight.config"),
             ("scripts/serve.sh", 200, 0o555, "code")]
    for rel, size, mode, kind in raws:
        data = os.urandom(size)
        _write(src / rel, data, mode, MODEL_MTIME)
        meta = {"name": Path(rel).name, "mode": mode, "uid": 0, "gid": 0, "size": size,
                "mtime": "2025-01-01T00:00:00Z", "typeflag": 48}
        layers.append(lay.add_bytes(data, t["layer"](kind, "raw"),
                                    {t["filepath"]: rel, t["metadata"]: json.dumps(meta)}))
    # tar layers: nested directories with their own modes
    _write(src / "config/config.json", json.dumps({"nonce": os.urandom(8).hex()}).encode(), 0o644)
    _write(src / "config/generation/generation_config.json", b'{"top_p": 0.9}\n', 0o600)
    _write(src / "docs/README.md", b"# test model\n" + os.urandom(4).hex().encode(), 0o644)
    _write(src / "docs/LICENSE", b"Apache-2.0\n", 0o644)
    _write(src / "code/pkg/__init__.py", b"", 0o644)
    _write(src / "code/pkg/sub/mod.py", b"print('hi')\n", 0o755)
    os.chmod(src / "config/generation", 0o750)
    for d in [src / "config", src / "docs", src / "code", src / "code/pkg", src / "code/pkg/sub"]:
        os.chmod(d, 0o755)
    for top, fmt, kind in [("config", "tar", "weight.config"), ("docs", "tar+gzip", "doc"),
                           ("code", "tar+zstd", "code")]:
        for p in [src / top] + list((src / top).rglob("*")):
            os.utime(p, (TAR_MTIME, TAR_MTIME), follow_symlinks=False)
        layers.append(lay.add_bytes(tar_of_tree(src, top, fmt), t["layer"](kind, fmt),
                                    {t["filepath"]: top}))
    if extra_tar:
        kind, data, fmt = extra_tar
        layers.append(lay.add_bytes(data, t["layer"](kind, fmt), {t["filepath"]: "extra"}))
    cfg = {"descriptor": {"name": "shoal-model-tree", "version": "1"},
           "config": {"format": "safetensors"},
           "modelfs": {"type": "layers", "diffIds": [b.digest for b in layers]}}
    config = lay.add_bytes(json.dumps(cfg).encode(), t["config"])
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": t["artifact"],
                "config": config.descriptor(), "layers": [b.descriptor() for b in layers]}
    return lay.add_manifest(manifest, tag, config, layers)


def push_model_tree(registry: Registry, workdir: Path, repo: str, **kw) -> tuple[Artifact, Path]:
    """build_model_tree + skopeo push; returns (artifact, source directory)."""
    name = repo.replace("/", "_")
    src = Path(workdir) / f"src-{name}"
    art = build_model_tree(Path(workdir) / f"layout-{name}", src, **kw)
    push_artifact(art, registry, repo, Path(workdir) / "skopeo.log")
    return art, src


def evil_tar(kind: str, outside: Path) -> bytes:
    """A tar that tries to write outside the directory it is extracted to.
    kind: dotdot, absolute, symlink, hardlink. `outside` is an absolute path
    the tar aims at (it must not exist afterwards)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add_file(name, data=b"pwned\n"):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
        add_file("extra/ok.txt", b"fine\n")
        if kind == "dotdot":
            add_file("extra/../../../../../../.." + str(outside))
        elif kind == "absolute":
            add_file(str(outside))
        elif kind == "symlink":
            ti = tarfile.TarInfo("extra/link")
            ti.type = tarfile.SYMTYPE
            ti.linkname = str(outside.parent)
            tf.addfile(ti)
            add_file("extra/link/" + outside.name)
        elif kind == "hardlink":
            ti = tarfile.TarInfo("extra/hard")
            ti.type = tarfile.LNKTYPE
            ti.linkname = "../../../../../../.." + str(outside)
            tf.addfile(ti)
        else:
            raise ValueError(kind)
    return buf.getvalue()


def tree_listing(root: Path, skip=(".shoal-pull.json",)) -> dict:
    """rel path → (type, mode, sha256 or link target) for everything under root."""
    out = {}
    root = Path(root)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel in skip:
            continue
        st = p.lstat()
        mode = st.st_mode & 0o7777
        if p.is_symlink():
            out[rel] = ("link", 0, os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", mode, "")
        else:
            out[rel] = ("file", mode, sha256_file(p))
    return out


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("shoald", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def api_request(sock_path: Path | str, method: str, path: str, body=None,
                timeout: float = 30.0, headers: dict | None = None) -> tuple[int, object]:
    """One request to shoald's local API; returns (status, parsed JSON or raw text)."""
    c = _UnixHTTPConnection(str(sock_path), timeout)
    try:
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        c.request(method, path, body=data, headers=hdrs)
        r = c.getresponse()
        raw = r.read().decode()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw
    finally:
        c.close()


def api_events(sock_path: Path | str, method: str, path: str, body=None,
               timeout: float = 300.0) -> tuple[int, list[dict]]:
    """A streamed (NDJSON) API response, read to the end: (status, events)."""
    c = _UnixHTTPConnection(str(sock_path), timeout)
    try:
        data = None if body is None else json.dumps(body)
        c.request(method, path, body=data, headers={"Accept": "application/x-ndjson",
                                                    "Content-Type": "application/json"})
        r = c.getresponse()
        events = []
        for line in r:
            line = line.strip()
            if line:
                events.append(json.loads(line))
        return r.status, events
    finally:
        c.close()


def cache_file(d: "Shoald", digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return d.data_dir / "content" / hexd[:2] / hexd
