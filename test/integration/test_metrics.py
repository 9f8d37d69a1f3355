"""Metrics on both binaries: a scheduler and two shoald move one blob through
the swarm; both /metrics pass `promtool check metrics` and the key series move
as the bytes did (checked against the registry's own log): bytes by source add
up to the blob, piece fetch latencies count the pieces, the scheduler times
its decisions, gauges show the transfer while it runs, failures are counted by
kind. Every metric the binaries export is in the README's reference table and
every one listed there is exported."""

from __future__ import annotations

import re
import threading
import time

import shoal_harness as h

REPO = "models/metrics"
SIZE = 24 * h.MiB + 123  # 7 pieces of 4 MiB, the last one short
PIECE = 4 * h.MiB
PIECES = (SIZE + PIECE - 1) // PIECE


def lint(name: str, text: str) -> None:
    rc, out = h.promtool_check_metrics(text)
    assert rc == 0 and out.strip() == "", f"promtool check metrics on {name}: rc {rc}\n{out}"


def test_metrics_follow_a_blob_through_the_swarm(registry, scheduler_factory, shoald_factory,
                                                 test_dir):
    digest, _ = registry.push_random_blob(REPO, SIZE, test_dir)
    sched = scheduler_factory()
    common = dict(insecure=[registry.hostport], default_registry=registry.hostport)
    d1 = shoald_factory(name="shoald1", extra_args=h.swarm_args(sched), **common)
    # d2 downloads slowly enough (~4 s) for the gauges to be seen mid-transfer
    d2 = shoald_factory(name="shoald2",
                        extra_args=h.swarm_args(sched, ["--download-rate-limit", "6MiB"]),
                        **common)
    for name, text in [("shoald (idle)", d1.metrics_text()),
                       ("shoal-scheduler (idle)", sched.metrics_text())]:
        lint(name, text)

    # d1 is the first with a client: elected source, reads the registry once
    mark = registry.log_mark()
    r = d1.get_blob(REPO, digest)
    assert r.status == 200 and r.complete and r.digest == digest, (r.error, d1.log_tail())
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) == SIZE
    m1 = d1.metrics()
    assert h.metric_with_labels(m1, "shoal_bytes_total", source="registry") == SIZE
    assert h.metric_with_labels(m1, "shoal_bytes_total", source="peer") == 0
    assert m1["shoal_source_bytes_total"] == SIZE  # the older name agrees
    assert h.metric_with_labels(m1, "shoal_piece_fetch_seconds_count", source="registry") \
        == PIECES
    assert m1["shoal_mirror_client_bytes_total"] == SIZE
    assert m1["shoal_storage_disk_bytes"] == SIZE

    # d2 gets every piece from d1; watch the gauges while it runs
    mark = registry.log_mark()
    seen = {"tasks": 0.0, "peers": 0.0, "slots": 0.0}
    result = {}

    def pull():
        result["r"] = d2.get_blob(REPO, digest)
    t = threading.Thread(target=pull)
    t.start()
    while t.is_alive():
        try:
            m2, m1 = d2.metrics(), d1.metrics()
        except OSError:
            break
        seen["tasks"] = max(seen["tasks"], m2.get("shoal_tasks_active", 0))
        seen["peers"] = max(seen["peers"], m2.get("shoal_peers_active", 0))
        seen["slots"] = max(seen["slots"], m1.get("shoal_upload_slots_in_use", 0))
        time.sleep(0.05)
    t.join()
    r = result["r"]
    assert r.status == 200 and r.complete and r.digest == digest, (r.error, d2.log_tail())
    assert seen["tasks"] == 1, seen
    assert seen["peers"] == 1, seen  # one parent: d1
    registry.settle()
    assert registry.blob_body_bytes(digest, since=mark) == 0, "d2 read the registry"
    m2 = d2.metrics()
    assert h.metric_with_labels(m2, "shoal_bytes_total", source="peer") == SIZE
    assert h.metric_with_labels(m2, "shoal_bytes_total", source="registry") == 0
    assert h.metric_with_labels(m2, "shoal_piece_fetch_seconds_count", source="peer") == PIECES
    assert h.metric_with_labels(m2, "shoal_piece_fetch_seconds_sum", source="peer") > 0
    assert m2["shoal_tasks_active"] == 0 and m2["shoal_peers_active"] == 0
    m1 = d1.metrics()
    assert SIZE <= m1["shoal_upload_bytes_total"] <= SIZE + PIECE
    assert m1["shoal_upload_slots_in_use"] == 0
    assert m1["shoal_upload_slots"] == 3  # the default (bench/README.md: 3 beat 4 at 16 nodes)

    # the same blob again from d2: served from its cache
    r = d2.get_blob(REPO, digest)
    assert r.complete and r.digest == digest
    m2 = d2.metrics()
    assert h.metric_with_labels(m2, "shoal_bytes_total", source="cache") == SIZE
    assert m2["shoal_mirror_client_bytes_total"] == 2 * SIZE
    # what d2's clients got = what came in from each source
    assert sum(h.metric_with_labels(m2, "shoal_bytes_total", source=s)
               for s in ("registry", "peer", "cache")) == m2["shoal_mirror_client_bytes_total"]
    assert m2["shoal_storage_disk_bytes"] == SIZE
    assert m2["shoal_storage_filesystem_size_bytes"] >= m2["shoal_storage_filesystem_free_bytes"] > 0
    assert m2["shoal_storage_gc_evictions_total"] == 0
    for m in (m1, m2):  # a clean transfer: no failures of any kind
        for kind in ("origin", "digest_mismatch", "peer_piece", "scheduler", "storage"):
            assert f'shoal_failures_total{{kind="{kind}"}}' in m, kind
            assert h.metric_with_labels(m, "shoal_failures_total", kind=kind) == 0, kind

    s = sched.metrics()
    assert s["shoal_scheduler_hosts"] == 2
    assert h.metric_with_labels(s, "shoal_scheduler_decisions_total", kind="from_origin") >= 1
    assert h.metric_with_labels(s, "shoal_scheduler_decisions_total", kind="parents") >= 1
    assert s["shoal_scheduler_decision_latency_seconds_count"] >= 3
    assert s["shoal_scheduler_source_elections_total"] == 1

    # a daemon whose scheduler is gone counts the failure and still serves
    # the blob (straight from the registry)
    dead = h.free_port()
    d3 = shoald_factory(name="shoald3", extra_args=["--scheduler", f"127.0.0.1:{dead}"],
                        **common)
    r = d3.get_blob(REPO, digest)
    assert r.complete and r.digest == digest, (r.error, d3.log_tail())
    m3 = d3.metrics()
    assert h.metric_with_labels(m3, "shoal_failures_total", kind="scheduler") >= 1
    assert h.metric_with_labels(m3, "shoal_bytes_total", source="registry") == SIZE

    texts = {"shoald1": d1.metrics_text(), "shoald2": d2.metrics_text(),
             "shoald3": d3.metrics_text(), "shoal-scheduler": sched.metrics_text()}
    for name, text in texts.items():
        lint(name, text)
    for d in (d1, d2, d3):
        assert d.stop() == 0, d.name

    # the README's reference table and the binaries agree
    exported = set()
    for text in texts.values():
        exported |= set(h.metric_families(text))
    documented = readme_metrics()
    assert exported - documented == set(), "exported but not in README 'Operating Shoal'"
    assert documented - exported == set(), "in the README table but not exported"


def readme_metrics() -> set[str]:
    """Metric names in the first column of the README's metrics reference table."""
    text = (h.repo_root() / "README.md").read_text()
    start = text.index("### Metrics reference")
    end = text.index("\n#", start + 1)
    names = set()
    for line in text[start:end].splitlines():
        m = re.match(r"^\|\s*`(shoal_[a-z0-9_]+)`", line)
        if m:
            names.add(m.group(1))
    assert names, "no metric rows found in README's 'Metrics reference'"
    return names
