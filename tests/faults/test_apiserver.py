"""Scenarios 1-3: the API server restarted, a silent network partition, and an API server
that throttles, fails, answers slowly or ends watches with 410 Gone. The operator runs as
the chart's ServiceAccount through the fault proxy; users act directly on the API server."""

from __future__ import annotations

import time

import pytest
from faultproxy import FaultProxy, Rule
from kit import (
    RESYNC,
    Site,
    applied_spec_kept,
    condition,
    duplicates,
    promoted,
    serves,
)

V1, V2, V3 = (
    "registry.local/detector:1.0",
    "registry.local/detector:1.1",
    "registry.local/detector:1.2",
)


def rollout(site: Site, start: object, proxy: FaultProxy | None = None) -> tuple[dict, object]:
    op = start(proxy)  # type: ignore[operator]
    em = site.edgemodel("detector", V1)
    site.apply(em)
    first = site.wait("detector", promoted, 60, "v1 promoted")
    return first, op


def settled(site: Site, name: str, image: str, timeout: float, what: str) -> dict:
    """Promoted, and every workload and pod on the promoted revision with `image`."""
    em = site.wait(
        name,
        lambda e: promoted(e) and serves(site, name, e["status"]["revision"], image),
        timeout,
        what,
    )
    return em


def reasons(site: Site, name: str, reason: str) -> list[str]:
    return [m for _, r, m in site.events(name) if r == reason]


@pytest.mark.scenario(
    "1",
    "API server restarted mid-rollout and mid-watch",
    "the rollout under way finishes on the new revision without a rollback; a change made "
    "right after the restart is acted on (watches resumed); one Promoted Event per revision, "
    "no duplicate Events; spec untouched; the operator kept running",
)
def test_api_server_restart_mid_rollout_and_mid_watch(site: Site, start: object) -> None:
    proxy = site.cluster.proxy()
    _, op = rollout(site, start, proxy)
    patches = len(proxy.requests("PATCH", "/deployments/detector-cpu"))
    # The control plane's restart takes longer than the smallest deadline on a busy machine.
    patient = {"progressDeadlineSeconds": 60}
    em2 = site.edgemodel("detector", V2, version="1.1.0", rollout=patient)
    site.apply(em2)
    # Mid-rollout: the operator has just written the new template.
    deadline = time.monotonic() + 30
    while len(proxy.requests("PATCH", "/deployments/detector-cpu")) == patches:
        assert time.monotonic() < deadline, "the operator never started the rollout"
        time.sleep(0.1)
    site.cluster.restart_apiserver(down_seconds=3)
    # Mid-watch: a change right after the restart must reach the operator.
    three = [{"name": "cpu", "accelerator": "cpu", "replicas": 3}]
    em3 = site.edgemodel("detector", V3, version="1.2.0", targets=three, rollout=patient)
    site.apply(em3)
    done = settled(site, "detector", V3, 90, "v1.2.0 promoted and served after the restart")

    status = done["status"]
    assert not status.get("failedRevisions"), status.get("failedRevisions")
    assert condition(done, "RolledBack").get("status") != "True"
    assert len(site.pods("detector")) == 3
    events = site.events("detector")
    assert not duplicates(events), duplicates(events)
    assert not reasons(site, "detector", "RolledBack")
    promoted_msgs = reasons(site, "detector", "Promoted")
    assert promoted_msgs.count(f"Revision {status['revision']} passed its health gates and is "
                               "now the stable revision") == 1  # fmt: skip
    assert applied_spec_kept(site, em3)
    assert op.alive()  # type: ignore[attr-defined]


@pytest.mark.scenario(
    "2",
    "Silent network partition longer than the watch inactivity timeout",
    "nothing changes while the operator cannot see; after the partition it notices by its "
    "own timeouts (the proxy never closes the hung connections), acts on the change made "
    "meanwhile exactly once (one Updated Event) and promotes it; no duplicate Events",
)
def test_silent_partition(site: Site, start: object) -> None:
    proxy = site.cluster.proxy()
    first, op = rollout(site, start, proxy)
    partitioned_at = time.time()
    proxy.partition()
    site.apply(site.edgemodel("detector", V2, version="1.1.0"))
    time.sleep(15)  # longer than EDGEMODEL_WATCH_INACTIVITY_SECONDS (10)
    assert op.alive()  # type: ignore[attr-defined]
    assert serves(site, "detector", first["status"]["revision"], V1)  # it could not act
    proxy.heal()
    done = settled(site, "detector", V2, 10 + 5 + 6 * RESYNC + 20, "v1.1.0 promoted after")
    # Its own timeouts made it reopen its watches (held by the proxy until the partition
    # healed, or sent after it, as the machine's load has it).
    assert [e for e in proxy.log if e.at > partitioned_at and e.watch], "no watch was reopened"
    events = site.events("detector")
    assert not duplicates(events), site.timeline("detector", proxy)
    rev = done["status"]["revision"]
    updated = f"Updated Deployment detector-cpu, Service detector-cpu for revision {rev}"
    assert reasons(site, "detector", "Updated").count(updated) == 1
    assert not done["status"].get("failedRevisions")
    assert op.alive()  # type: ignore[attr-defined]


@pytest.mark.scenario(
    "3",
    "429, 5xx and slow answers; watches ending in 410 Gone",
    "with throttled and failing writes, a slow answer past the API timeout and every watch "
    "ended by 410 Gone, the operator retries, relists and promotes the new revision once; "
    "no duplicate Events; it kept running",
)
def test_throttling_errors_slow_answers_and_gone_watches(site: Site, start: object) -> None:
    proxy = site.cluster.proxy()
    _, op = rollout(site, start, proxy)
    rules = [
        proxy.add(Rule("PATCH", r"/edgemodels/detector/status", status=429, retry_after=1,
                       times=2)),
        proxy.add(Rule("PATCH", r"/deployments/detector-cpu", status=500, times=1)),
        proxy.add(Rule("PATCH", r"/deployments/detector-cpu", status=503, times=1)),
        proxy.add(Rule("PATCH", r"/deployments/detector-cpu", delay=7, times=1)),  # > 5 s
        proxy.add(Rule("GET", r"watch=true", gone=True, times=8)),
        proxy.add(Rule("POST", r"/events", delay=2, times=2)),
    ]  # fmt: skip
    proxy.cut()  # every watch reconnects, into 410 Gone
    site.apply(site.edgemodel("detector", V2, version="1.1.0"))
    done = settled(site, "detector", V2, 90, "v1.1.0 promoted through the faults")
    missed = [r for r in rules if r.hits < (r.times or 1)]
    assert not missed, f"faults never injected: {missed}"
    events = site.events("detector")
    assert not duplicates(events), duplicates(events)
    assert reasons(site, "detector", "Promoted").count(
        f"Revision {done['status']['revision']} passed its health gates and is now the stable "
        "revision") == 1  # fmt: skip
    assert not done["status"].get("failedRevisions")
    assert op.alive()  # type: ignore[attr-defined]
