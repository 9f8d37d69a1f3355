"""The deployment files in deploy/ are checked against the binaries they run:

- systemd: `systemd-analyze verify` passes on the real unit files (in a
  scratch root where /usr/local/bin holds the built binaries), and
  `systemd-analyze security` rates their sandbox;
- the example configs (systemd and Kubernetes) start shoald and
  shoal-scheduler, and a misspelt key is refused;
- Kubernetes: `kubectl kustomize deploy/kubernetes` builds, and the objects
  fit together and with the binaries (ports, probe paths, config keys,
  scheduler DNS names, the init container's containerd-config flags);
- Grafana: the dashboard is valid JSON, every expression parses as PromQL
  (promtool) and names only metrics the binaries export;
- the image build: the Containerfile's stages and paths exist, and its
  runtime package list resolves on the built binaries.
"""

from __future__ import annotations

import configparser
import copy
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import shoal_harness as h

DEPLOY = h.repo_root() / "deploy"
K8S = DEPLOY / "kubernetes"


# ---- systemd ----------------------------------------------------------------

UNITS = {"shoald.service": "shoald", "shoal-scheduler.service": "shoal-scheduler"}
BINARIES = {"shoald": lambda: h.shoald_binary(), "shoal-scheduler": lambda: h.scheduler_binary(),
            "shoalctl": lambda: h.shoalctl_binary()}


def unit_root(test_dir: Path) -> Path:
    """A scratch root with the unit files as they are, the built binaries at
    their install paths and systemd's own units (sysinit.target, ...)."""
    root = test_dir / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(DEPLOY / "systemd" / unit, root / "etc/systemd/system" / unit)
    for name, path in BINARIES.items():
        if name != "shoalctl":
            shutil.copy(path(), root / "usr/local/bin" / name)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    return root


def read_unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # keys are case-sensitive
    # repeated keys (SystemCallFilter=) are fine for systemd; keep the last
    cp.read_string(path.read_text())
    return cp


def test_systemd_units_verify_and_are_sandboxed(test_dir):
    root = unit_root(test_dir)
    p = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *UNITS],
                       capture_output=True, text=True, timeout=120)
    # unknown or misspelt keys are only warnings: any output is a failure
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    for unit, binary in UNITS.items():
        u = read_unit(DEPLOY / "systemd" / unit)
        svc = u["Service"]
        assert svc["ExecStart"].split()[0] == f"/usr/local/bin/{binary}"
        assert "--config /etc/shoal/" in svc["ExecStart"]
        for key, want in {"ProtectSystem": "strict", "NoNewPrivileges": "yes",
                          "PrivateTmp": "yes", "ProtectHome": "yes",
                          "CapabilityBoundingSet": "", "Restart": "on-failure",
                          "DynamicUser": "yes"}.items():
            assert svc.get(key) == want, (unit, key, svc.get(key))
        assert int(svc["LimitNOFILE"]) >= 65536
        s = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}",
                            "--threshold=20", unit], capture_output=True, text=True, timeout=120)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", s.stdout + s.stderr)
        assert m, s.stdout + s.stderr
        print(f"{unit}: systemd-analyze security exposure {m.group(1)}")
        assert s.returncode == 0 and float(m.group(1)) <= 2.0, s.stdout[-3000:]
    shoald = read_unit(DEPLOY / "systemd" / "shoald.service")["Service"]
    assert shoald["StateDirectory"] == "shoal" and shoald["RuntimeDirectory"] == "shoal"
    assert set(shoald["ReadWritePaths"].replace("-", "").split()) == {"/var/lib/shoal",
                                                                       "/run/shoal"}


def test_systemd_verify_catches_a_broken_unit(test_dir):
    root = unit_root(test_dir)
    unit = root / "etc/systemd/system/shoald.service"
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=maybe"))
    p = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "shoald.service"],
                       capture_output=True, text=True, timeout=120)
    assert "Failed to parse boolean value, ignoring: maybe" in p.stdout + p.stderr
    # and a unit whose binary is not installed
    (root / "usr/local/bin/shoal-scheduler").unlink()
    p = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "shoal-scheduler.service"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "/usr/local/bin/shoal-scheduler" in p.stderr, p.stderr


# ---- example configs -----------------------------------------------------------

SHOALD_CONFIGS = [DEPLOY / "systemd" / "shoald.yaml", K8S / "config" / "shoald.yaml"]
SCHEDULER_CONFIGS = [DEPLOY / "systemd" / "shoal-scheduler.yaml",
                     K8S / "config" / "shoal-scheduler.yaml"]


@pytest.mark.parametrize("config", SHOALD_CONFIGS, ids=lambda p: f"{p.parent.name}")
def test_shoald_starts_with_example_config(config, shoald_factory):
    # the harness's flags (ports, data dir, socket) win over the file's
    d = shoald_factory(name="shoald", extra_args=["--config", str(config)])
    m = d.metrics()
    # the file's `scheduler:` list was read: swarm mode, upload slots from the file
    assert m["shoal_upload_slots"] == yaml.safe_load(config.read_text())["upload-slots"]
    assert d.stop() == 0


@pytest.mark.parametrize("config", SCHEDULER_CONFIGS, ids=lambda p: f"{p.parent.name}")
def test_scheduler_starts_with_example_config(config, scheduler_factory):
    s = scheduler_factory(extra_args=["--config", str(config)])
    assert "shoal_scheduler_hosts" in s.metrics()
    assert s.stop() == 0


def test_a_misspelt_config_key_is_refused(test_dir):
    for binary, config in [(h.shoald_binary(), SHOALD_CONFIGS[0]),
                           (h.scheduler_binary(), SCHEDULER_CONFIGS[0])]:
        bad = test_dir / config.name
        bad.write_text(config.read_text() + "log-levle: debug\n")
        p = subprocess.run([str(binary), "--config", str(bad)], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode != 0
        assert "log-levle" in p.stdout + p.stderr, p.stdout + p.stderr


# ---- Kubernetes ----------------------------------------------------------------


def kustomize_python(base: Path) -> list[dict]:
    """The subset of `kustomize build` this base uses, for machines without
    kubectl: resources, namespace, labels, configMapGenerator (with a content
    hash suffix and references rewritten) and images."""
    k = yaml.safe_load((base / "kustomization.yaml").read_text())
    docs = []
    for r in k.get("resources", []):
        docs += [d for d in yaml.safe_load_all((base / r).read_text()) if d]
    renames = {}
    for g in k.get("configMapGenerator", []):
        data = {}
        for f in g["files"]:
            key, _, path = f.partition("=")
            data[key] = (base / (path or key)).read_text()
        suffix = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        renames[g["name"]] = f"{g['name']}-{suffix}"
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": renames[g["name"]]}, "data": data})
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}"
              for i in k.get("images", [])}
    for d in docs:
        md = d.setdefault("metadata", {})
        if d["kind"] != "Namespace" and k.get("namespace"):
            md["namespace"] = k["namespace"]
        for lab in k.get("labels", []):
            md.setdefault("labels", {}).update(lab["pairs"])
            tmpl = d.get("spec", {}).get("template")
            if tmpl and lab.get("includeTemplates"):
                tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(lab["pairs"])
        pod = d.get("spec", {}).get("template", {}).get("spec")
        if pod:
            for v in pod.get("volumes", []):
                if "configMap" in v and v["configMap"]["name"] in renames:
                    v["configMap"]["name"] = renames[v["configMap"]["name"]]
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                c["image"] = images.get(c["image"], c["image"])
    return docs


def kustomize_build() -> tuple[list[dict], str]:
    if shutil.which("kubectl"):
        p = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        return [d for d in yaml.safe_load_all(p.stdout) if d], "kubectl kustomize"
    return kustomize_python(K8S), "python (kubectl not installed)"


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def flag(args: list[str], name: str) -> str:
    assert name in args, (name, args)
    return args[args.index(name) + 1]


def test_kustomize_builds_a_consistent_deployment():
    docs, how = kustomize_build()
    print(f"built with {how}: {len(docs)} objects")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ServiceAccount", "ConfigMap",
                            "ConfigMap", "DaemonSet", "StatefulSet", "Service", "Service",
                            "ServiceMonitor"]), kinds
    ns = one(docs, "Namespace")["metadata"]["name"]
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == ns, d["metadata"]
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "shoal"
    # no RBAC: neither binary talks to the API server, and no token is mounted
    for sa in (d for d in docs if d["kind"] == "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False

    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    image = f"{k['images'][0]['newName']}:{k['images'][0]['newTag']}"
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}

    def config_of(pod: dict, container: dict, key: str) -> dict:
        """The YAML config a container gets: --config FILE from a ConfigMap volume."""
        path = Path(flag(container["args"], "--config"))
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
        vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        cm = configmaps[vol["configMap"]["name"]]
        assert path.name == key and key in cm["data"]
        assert cm["data"][key] == (K8S / "config" / key).read_text()
        return yaml.safe_load(cm["data"][key])

    # ---- shoald DaemonSet
    ds = one(docs, "DaemonSet", "shoald")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (c,) = pod["containers"]
    assert c["image"] == image and c["command"] == ["shoald"]
    cfg = config_of(pod, c, "shoald.yaml")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"mirror": port_of(cfg["mirror-listen"]), "peer": port_of(cfg["peer-listen"]),
                     "metrics": port_of(cfg["admin-listen"])}
    assert cfg["admin-listen"].startswith("0.0.0.0:"), "Prometheus scrapes the node address"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert host_paths["data"] == "/var/lib/shoal" and mounts["data"] == cfg["data-dir"]
    assert mounts["run"] == str(Path(cfg["api-socket"]).parent)
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"NODE_IP": "status.hostIP", "NODE_NAME": "spec.nodeName"}
    assert flag(c["args"], "--advertise-addr") == f"$(NODE_IP):{port_of(cfg['peer-listen'])}"
    # the init container points the node's containerd at this mirror
    (init,) = pod["initContainers"]
    assert init["image"] == image and init["command"][:2] == ["shoalctl", "containerd-config"]
    assert flag(init["command"], "--mirror") == f"http://{cfg['mirror-listen']}"
    certs = flag(init["command"], "--config-path")
    (m,) = [m for m in init["volumeMounts"] if m["mountPath"] == certs]
    assert host_paths[m["name"]] == "/etc/containerd/certs.d"
    # the command line parses: shoalctl accepts it (dry run)
    dry = subprocess.run([str(h.shoalctl_binary())] + init["command"][1:] + ["--dry-run"],
                         capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0 and f"[host.\"http://{cfg['mirror-listen']}\"]" in dry.stdout, \
        dry.stderr

    # ---- scheduler StatefulSet behind a headless Service
    sts = one(docs, "StatefulSet", "shoal-scheduler")
    spod = sts["spec"]["template"]["spec"]
    (sc,) = spod["containers"]
    assert sc["image"] == image and sc["command"] == ["shoal-scheduler"]
    scfg = config_of(spod, sc, "shoal-scheduler.yaml")
    sports = {p["name"]: p["containerPort"] for p in sc["ports"]}
    assert sports == {"grpc": port_of(scfg["listen"]), "metrics": port_of(scfg["http-listen"])}
    assert scfg["http-listen"].startswith("0.0.0.0:"), "probes and Prometheus reach the pod IP"
    assert sc["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert sc["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(sc["resources"]["limits"])
    svc = one(docs, "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    # every daemon lists every scheduler replica by its stable DNS name
    want = [f"{sts['metadata']['name']}-{i}.{svc['metadata']['name']}.{ns}.svc.cluster.local:"
            f"{sports['grpc']}" for i in range(sts["spec"]["replicas"])]
    assert cfg["scheduler"] == want

    # ---- ServiceMonitor: selects both Services, whose `metrics` port leads
    # to a container port named metrics
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    (ep,) = sm["spec"]["endpoints"]
    assert ep["path"] == "/metrics"
    selected = [d for d in docs if d["kind"] == "Service" and
                sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()]
    assert len(selected) == 2
    pods = {"shoald": (ds, c), "shoal-scheduler": (sts, sc)}
    for s in selected:
        (p,) = [p for p in s["spec"]["ports"] if p["name"] == ep["port"]]
        wl, cont = next(v for v in pods.values()
                        if s["spec"]["selector"].items()
                        <= v[0]["spec"]["template"]["metadata"]["labels"].items())
        named = {q["name"]: q["containerPort"] for q in cont["ports"]}
        assert named[p["targetPort"]] == p["port"], (s["metadata"]["name"], p)


def test_python_kustomize_agrees_with_kubectl():
    """The fallback used without kubectl builds the same objects (names aside)."""
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed: nothing to compare the fallback with")
    real, _ = kustomize_build()
    ours = kustomize_python(K8S)

    def key(d):
        return (d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"]))

    def strip(d):
        d = copy.deepcopy(d)
        d["metadata"]["name"] = key(d)[1]
        for v in d.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if "configMap" in v:
                v["configMap"]["name"] = re.sub(r"-[a-z0-9]{10}$", "", v["configMap"]["name"])
        return d
    assert sorted(map(key, real)) == sorted(map(key, ours))
    by_key = {key(d): strip(d) for d in ours}
    for d in real:
        assert strip(d) == by_key[key(d)], key(d)


# ---- Grafana -----------------------------------------------------------------


def exported_families(scheduler_factory, shoald_factory) -> set[str]:
    s = scheduler_factory()
    d = shoald_factory(extra_args=h.swarm_args(s))
    return set(h.metric_families(d.metrics_text())) | set(h.metric_families(s.metrics_text()))


def test_grafana_dashboard_uses_exported_metrics(scheduler_factory, shoald_factory, test_dir):
    dash = json.loads((DEPLOY / "grafana" / "shoal.json").read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"]), "panel ids repeat"
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= 15
    families = exported_families(scheduler_factory, shoald_factory)
    used = set()
    for e in exprs:
        for name in re.findall(r"\b(shoal_[a-z0-9_]+)", e):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in families, f"{name} in {e!r} is not exported"
            used.add(base)
    # the list: bytes by source and to clients, piece and decision
    # latency, tasks and peers, upload slots, failures, disk, GC
    for need in ["shoal_bytes_total", "shoal_mirror_client_bytes_total",
                 "shoal_piece_fetch_seconds", "shoal_scheduler_decision_latency_seconds",
                 "shoal_tasks_active", "shoal_peers_active", "shoal_scheduler_peers",
                 "shoal_upload_slots_in_use", "shoal_failures_total", "shoal_storage_disk_bytes",
                 "shoal_storage_gc_evictions_total"]:
        assert need in used, need
    # every expression is valid PromQL: promtool parses them as recording rules
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"shoal:dashboard:{i}",
         "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    path = test_dir / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    p = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


# ---- image build ---------------------------------------------------------------


def test_containerfile_structure_and_runtime_packages(test_dir):
    text = (DEPLOY / "Containerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert stages == [("debian:12", "build"), ("debian:12-slim", "")], stages
    for src in re.findall(r"^COPY\s+(?!--from)(\S+)\s", text, re.M):
        assert src == "." or (h.repo_root() / src).exists(), f"COPY {src}: no such path"
    assert "./scripts/install-deps.sh --build-only" in text
    assert "./scripts/build.sh release" in text
    for b in ("daemon/shoald/shoald", "scheduler/shoal-scheduler", "daemon/ctl/shoalctl"):
        assert f"build/release/{b}" in text
        assert (h.build_dir() / b).exists(), f"{b} is not where the Containerfile takes it from"
    # the runtime stage installs what the binaries load, found by this script
    script = DEPLOY / "image" / "runtime-packages.sh"
    p = subprocess.run([str(script)] + [str(f()) for f in BINARIES.values()],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    pkgs = p.stdout.split()
    assert {"libc6", "libstdc++6", "libssl3"} <= set(pkgs) and len(pkgs) >= 10, pkgs
    q = subprocess.run(["dpkg-query", "-W", "-f", "${Status}\\n"] + pkgs, capture_output=True,
                       text=True, timeout=60)
    assert q.returncode == 0 and q.stdout.count("install ok installed") == len(pkgs), q.stdout
    assert not any(x.endswith("-dev") for x in pkgs), pkgs
