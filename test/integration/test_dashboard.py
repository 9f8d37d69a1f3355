"""The scheduler's dashboard in a real browser during a live swarm pull, its
JSON API, and its token.

A registry, a scheduler with --dashboard-token and three shoald (download
rate limited so the pull lasts ~15 s) run on loopback. Debian's chromium,
driven by playwright-core (browser/dashboard_check.cjs; `npm ci` into the
build tree, never a downloaded browser), first checks that the page and the
API refuse it without the token, then logs in with /?token=, sees every host,
sees the task appear and its progress change until every peer is done, opens
the task's page (each peer's progress, the graph of who fed whom) and saves
screenshots into the test's output directory.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

import shoal_harness as h

HERE = Path(__file__).resolve().parent
BROWSER_SRC = HERE / "browser"
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "s3cret-dashboard-token"


def browser_driver() -> Path:
    """playwright-core installed with `npm ci` into the build tree (once per
    package-lock.json); returns its node_modules."""
    dest = h.build_dir() / "test-browser"
    dest.mkdir(parents=True, exist_ok=True)
    lock = BROWSER_SRC / "package-lock.json"
    stamp = dest / "npm-ci.stamp"
    with open(dest / ".lock", "w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != lock.read_text():
            for f in ("package.json", "package-lock.json"):
                shutil.copy(BROWSER_SRC / f, dest / f)
            # playwright-core has no install script and downloads no browser; the
            # variable makes sure of it should that ever change.
            p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                               cwd=dest, capture_output=True, text=True, timeout=300,
                               env={**__import__("os").environ,
                                    "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
            if p.returncode != 0:
                pytest.fail(f"npm ci for playwright-core failed in {dest}:\n{p.stdout}{p.stderr}")
            stamp.write_text(lock.read_text())
    return dest / "node_modules"


def api(sched, path, token=None, method="GET", body=None, headers=None):
    hd = dict(headers or {})
    if token:
        hd["Authorization"] = f"Bearer {token}"
    return h.http_request("127.0.0.1", sched.http_port, method, path, headers=hd, body=body,
                          timeout=10)


def api_json(sched, path, token=TOKEN):
    r = api(sched, path, token)
    assert r.status == 200, (path, r.status, r.body[:300])
    assert r.header("Content-Type") == "application/json"
    return json.loads(r.body)


def start_nodes(registry, sched, shoald_factory, n, extra=()):
    return [shoald_factory(name=f"node{i}", insecure=[registry.hostport],
                           default_registry=registry.hostport,
                           extra_args=h.swarm_args(sched, ["--host-id", f"node{i}", *extra]))
            for i in range(1, n + 1)]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                    "(./scripts/install-deps.sh installs it)")
def test_dashboard_in_a_browser_during_a_live_pull(registry, scheduler_factory, shoald_factory,
                                                   test_dir):
    size = 64 * h.MiB
    digest, _ = registry.push_random_blob("models/dash", size, test_dir)
    task = digest.split(":")[1]
    mark = registry.log_mark()
    # a small model for the preheat form (heartbeats every second: jobs start fast)
    art = h.push_modelpack(registry, test_dir, "models/pre", weight_size=8 * h.MiB)
    sched = scheduler_factory(extra_args=["--dashboard-token", TOKEN, "--announce-interval", "1"])
    nodes = start_nodes(registry, sched, shoald_factory, 3, ["--download-rate-limit", "4MiB"])
    # a seed host, so the page offers the preheat form; its origin reads are rate limited
    # so the preheat lasts a few seconds and the page shows it before it succeeds
    shoald_factory(name="seed", insecure=[registry.hostport], default_registry=registry.hostport,
                   extra_args=h.swarm_args(sched, ["--host-id", "seed", "--seed",
                                                   "--download-rate-limit", "2MiB"]))
    host_ids = [f"node{i}" for i in range(1, 4)]

    node_modules = browser_driver()
    cfg = {"base": f"http://127.0.0.1:{sched.http_port}", "token": TOKEN, "out": str(test_dir),
           "hosts": host_ids, "task": task, "timeout_s": 150,
           "preheat_reference": f"{registry.hostport}/models/pre:{art.tag}"}
    log = open(test_dir / "browser.log", "w")
    proc = subprocess.Popen(["node", str(BROWSER_SRC / "dashboard_check.cjs"), json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**__import__("os").environ, "NODE_PATH": str(node_modules)},
                            start_new_session=True)
    pulls: list[cf.Future] = []
    ex = cf.ThreadPoolExecutor(3)
    try:
        ready = proc.stdout.readline().strip()
        assert ready == "READY", f"browser did not get ready ({ready!r}):\n" + \
            h.tail(test_dir / "browser.log")
        # The API shows the same hosts before the pull.
        hosts = api_json(sched, "/api/v1/hosts")["hosts"]
        assert sorted(x["id"] for x in hosts) == sorted(host_ids + ["seed"])
        assert all(x["online"] and x["address"] for x in hosts), hosts
        pulls = [ex.submit(d.get_blob, "models/dash", digest, None, None, 180) for d in nodes]
        # Mid-pull, the API reports a running task with partial progress.
        seen_partial = threading.Event()

        def partial():
            t = api_json(sched, f"/api/v1/tasks/{task}")
            if 0 < t["progress"] < 1 and t["peer_counts"]["running"] > 0:
                seen_partial.set()
                return True
            return False
        h.wait_until(partial, 60, 0.2, "a task in progress in /api/v1/tasks/{id}")
        out, _ = proc.communicate(timeout=170)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        ex.shutdown(wait=True)
    assert proc.returncode == 0, "browser check failed:\n" + h.tail(test_dir / "browser.log", 60)
    res = json.loads(out.strip().splitlines()[-1])["result"]
    (test_dir / "browser-result.log").write_text(json.dumps(res, indent=2))
    for f in pulls:
        r = f.result()
        assert r.status == 200 and r.complete and r.digest == digest

    # Refused without the token (page and API, from inside the browser).
    assert res["refused"]["page_status"] == 401
    assert "Token required" in res["refused"]["page_text"]
    assert res["refused"]["api_status"] == 401
    # /?token= traded the token for an HttpOnly cookie and left the address bar clean.
    assert res["page_status"] == 200
    assert res["url_after_login"].rstrip("/").endswith(str(sched.http_port))
    assert {"name": "shoal_dashboard_token", "httpOnly": True, "sameSite": "Strict"} \
        in res["cookies"], res["cookies"]
    # Hosts, the task, and progress that changed while we watched.
    assert set(host_ids) <= set(res["hosts_seen"])
    assert res["hosts_online_text"].strip() == "4 / 4"
    values = [s["progress"] for s in res["progress"]]
    partial = [v for v in values if 0 < v < 1]
    assert len(set(partial)) >= 2, f"progress did not move while watched: {values}"
    assert values == sorted(values), values
    assert values[-1] == 1.0 and res["progress"][-1]["done"] == 3
    assert res["chart_present"]
    # The task's page: three peers at 100% and the graph of who fed whom.
    assert sorted(p["host"] for p in res["detail_progress"]) == host_ids
    assert all(p["progress"] == 1.0 for p in res["detail_progress"])
    froms = {e["from"] for e in res["edges"]}
    assert "registry" in froms and froms & set(host_ids), res["edges"]
    assert res["task_url"].endswith(f"#/task/{task}")
    for shot in res["screenshots"]:
        assert Path(shot).stat().st_size > 10_000, shot
    assert not res["console_errors"], res["console_errors"]

    # The API's byte counts agree with the registry's own log.
    registry.settle()
    origin = registry.blob_body_bytes(digest, since=mark)
    assert origin == size
    # totals: the pulled blob plus the preheated model, which the one seed read itself
    all_origin = registry.all_blob_body_bytes(since=mark)
    model = sum(b.size for b in art.blobs)
    ov = api_json(sched, "/api/v1/overview")
    assert ov["bytes"]["from_registry"] == all_origin == size + model, (ov["bytes"], all_origin)
    assert ov["bytes"]["delivered"] == 3 * size + model
    assert ov["bytes"]["saved"] == 2 * size
    assert ov["hosts"] == {"online": 4, "total": 4}
    # The preheat the page started is in the API, on the seed host.
    job = api_json(sched, f"/api/v1/preheat/{res['preheat']['id']}")
    assert job["reference"] == f"{registry.hostport}/models/pre:{art.tag}"
    assert [s["host_id"] for s in job["seeds"]] == ["seed"]
    assert job["state"] == "succeeded" and job["progress"] == 1.0, job
    assert job["blobs_total"] == len(art.blobs) and job["bytes_total"] == sum(b.size for b in art.blobs)
    assert "models/pre" in res["preheat"]["text"] and "succeeded" in res["preheat"]["text"]
    assert res["preheat"]["states"][0] in ("pending", "running"), res["preheat"]
    assert [j["id"] for j in api_json(sched, "/api/v1/preheat")["preheats"]] == [job["id"]]
    h.wait_until(lambda: sum(api_json(sched, "/api/v1/overview")["series"]["from_registry"]) +
                 sum(api_json(sched, "/api/v1/overview")["series"]["from_peers"]) ==
                 3 * size + model, 5, 0.2, "the chart's series to add up to the bytes delivered")
    t = api_json(sched, f"/api/v1/tasks/{task}")
    assert t["digest"] == digest and t["repository"] == "models/dash"
    assert t["peer_counts"] == {"total": 3, "running": 0, "done": 3, "failed": 0}
    assert sum(e["bytes"] for e in t["edges"]) == 3 * size
    assert sum(e["bytes"] for e in t["edges"] if e["from"] is None) == size
    assert t["bytes_from_registry"] == origin and t["bytes_from_peers"] == 2 * size
    # shoalctl reads the same API: tables, --json, and a clear error without the token.
    ctl = [str(h.build_dir() / "daemon" / "ctl" / "shoalctl")]
    url = ["--scheduler-http", f"http://127.0.0.1:{sched.http_port}"]
    p = subprocess.run(ctl + ["hosts", *url, "--token", TOKEN], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["HOST", "ZONE", "ADDRESS"]
    assert sorted(ln.split()[0] for ln in lines[1:]) == sorted(host_ids + ["seed"]), p.stdout
    p = subprocess.run(ctl + ["tasks", *url, "--json"], capture_output=True, text=True,
                       timeout=30, env={**__import__("os").environ,
                                        "SHOAL_DASHBOARD_TOKEN": TOKEN})
    assert p.returncode == 0, p.stderr
    assert sorted(x["id"] for x in json.loads(p.stdout)["tasks"]) == \
        sorted([task] + [b.digest.split(":")[1] for b in art.blobs])
    p = subprocess.run(ctl + ["tasks", *url, "--token", TOKEN], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0 and digest[:19] in p.stdout and "100.0%" in p.stdout, p.stdout
    p = subprocess.run(ctl + ["tasks", digest, *url, "--token", TOKEN], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and "registry" in p.stdout and "node1" in p.stdout, p.stdout
    (test_dir / "shoalctl-tasks.log").write_text(p.stdout)
    p = subprocess.run(ctl + ["hosts", *url], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "--token" in p.stderr, p.stderr
    p = subprocess.run(ctl + ["hosts", "--scheduler-http", f"http://127.0.0.1:{h.free_port()}"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot connect" in p.stderr, p.stderr
    print(f"progress samples {len(values)}: {values[:6]}…; edges "
          f"{[(e['from'], e['to'], e['bytes'] >> 20) for e in t['edges']]}; "
          f"screenshots {res['screenshots']}")


def test_dashboard_token_and_api(registry, scheduler_factory, shoald_factory, test_dir):
    sched = scheduler_factory(extra_args=["--dashboard-token", TOKEN])
    # The page and every API endpoint refuse requests without the token.
    for path in ["/", "/index.html", "/assets/app.js", "/api/v1/overview", "/api/v1/hosts",
                 "/api/v1/tasks", f"/api/v1/tasks/{'0' * 64}"]:
        assert api(sched, path).status == 401, path
        assert api(sched, path, token="wrong").status == 401, path
    r = api(sched, "/api/v1/hosts")
    assert r.header("WWW-Authenticate", "").startswith("Bearer")
    assert "--dashboard-token" in json.loads(r.body)["error"]
    assert api(sched, "/?token=wrong").status == 401
    assert api(sched, "/", headers={"Cookie": "shoal_dashboard_token=wrong"}).status == 401
    assert api(sched, "/api/v1/preheat", method="POST", body=b"{}",
               headers={"Content-Type": "application/json"}).status == 401
    # /?token= sets an HttpOnly cookie that then opens the page and the API.
    r = api(sched, f"/?token={TOKEN}")
    assert r.status == 303 and r.header("Location") == "/"
    cookie = r.header("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    c = {"Cookie": cookie.split(";")[0]}
    page = api(sched, "/", headers=c)
    assert page.status == 200 and b"<title>Shoal scheduler</title>" in page.body
    assert "script-src 'self'" in page.header("Content-Security-Policy")
    assert page.header("X-Content-Type-Options") == "nosniff"
    assert api(sched, "/api/v1/hosts", headers=c).status == 200
    # Assets: right types and ETag revalidation.
    js = api(sched, "/assets/app.js", TOKEN)
    assert js.status == 200 and js.header("Content-Type").startswith("text/javascript")
    assert api(sched, "/assets/app.css", TOKEN).header("Content-Type").startswith("text/css")
    assert api(sched, "/assets/app.js", TOKEN,
               headers={"If-None-Match": js.header("ETag")}).status == 304
    # Probes and Prometheus are never behind the token.
    assert api(sched, "/healthz").status == 200
    assert api(sched, "/metrics").status == 200
    # API errors say what is wrong.
    assert api(sched, "/api/v1/tasks/nothex", TOKEN).status == 400
    r = api(sched, f"/api/v1/tasks/{'0' * 64}", TOKEN)
    assert r.status == 404 and "not known" in json.loads(r.body)["error"]
    assert api(sched, "/api/v1/hosts", TOKEN, method="DELETE").status == 405
    assert api(sched, "/api/v2/hosts", TOKEN).status == 404
    # Limits: a large body is refused before it is read.
    assert api(sched, "/api/v1/preheat", TOKEN, method="POST", body=b"x" * (64 * 1024),
               headers={"Content-Type": "application/json"}).status == 413

    # Preheat: JSON only, a reference, and a seed host online.
    def preheat(body, ctype="application/json"):
        return api(sched, "/api/v1/preheat", TOKEN, method="POST", body=body,
                   headers={"Content-Type": ctype})
    assert preheat(b'{"reference": "a/b:c"}', "text/plain").status == 415
    r = preheat(b'{"ref": 1}')
    assert r.status == 400 and "reference" in json.loads(r.body)["error"]
    r = preheat(b'{"reference": "Not A Reference!"}')
    assert r.status == 400, r.body
    r = preheat(b'{"reference": "%s/models/x:v1"}' % registry.hostport.encode())
    assert r.status == 503 and "no seed host" in json.loads(r.body)["error"], r.body
    assert api(sched, "/api/v1/preheat/" + "f" * 16, TOKEN).status == 404
    assert api(sched, "/api/v1/preheat/../x", TOKEN).status in (400, 404)

    # A non-loopback --http-listen without a token: the scheduler refuses to start.
    p = subprocess.run([str(h.scheduler_binary()), "--listen", f"127.0.0.1:{h.free_port()}",
                        "--http-listen", f"0.0.0.0:{h.free_port()}"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "--dashboard-token" in p.stderr and "loopback" in p.stderr, p.stderr
    # A token that could not travel in a cookie or a URL is refused at start.
    p = subprocess.run([str(h.scheduler_binary()), "--listen", f"127.0.0.1:{h.free_port()}",
                        "--http-listen", f"127.0.0.1:{h.free_port()}",
                        "--dashboard-token", "has space;semicolon"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "openssl rand -hex 32" in p.stderr, p.stderr
    # --dashboard=false: only /healthz and /metrics.
    plain = scheduler_factory(name="plain", extra_args=["--dashboard=false"])
    assert api(plain, "/").status == 404
    assert api(plain, "/api/v1/hosts").status == 404
    assert api(plain, "/metrics").status == 200
