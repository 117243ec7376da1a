"""Scenario 5: the operator SIGKILLed at the worst moments (the fault proxy holds the next
write, the test kills the process, the held write is dropped as a dead client's would be),
then started again by hand the way a kubelet restarts a pod. Mid-build is in
test_builds.py."""

from __future__ import annotations

import time
from typing import Any

import pytest
from clusterkit import wait_until
from faultproxy import FaultProxy, Rule
from kit import DEADLINE, Operator, Site, applied_spec_kept, condition, duplicates, promoted, serves

V1, V2 = "registry.local/detector:1.0", "registry.local/detector:1.1"
BAD = "registry.local/detector:1.1-never-ready"


def settled(site: Site, name: str, image: str, timeout: float, what: str) -> dict[str, Any]:
    return site.wait(
        name,
        lambda e: promoted(e) and serves(site, name, e["status"]["revision"], image),
        timeout,
        what,
    )


def kill(op: Operator, proxy: FaultProxy) -> None:
    """SIGKILL, and whatever it had in flight at the proxy never reaches the server."""
    op.process.kill()
    proxy.release(forward=False)
    proxy.clear()


def once(site: Site, name: str, reason: str, message: str) -> None:
    found = [m for _, r, m in site.events(name) if r == reason]
    assert found.count(message) == 1, site.timeline(name)


@pytest.mark.scenario(
    "5a",
    "SIGKILL between a workload write and its status write",
    "the restarted operator finishes the rollout without writing the workload again or "
    "repeating an Event (one Updated, one Promoted); spec untouched",
)
def test_kill_between_workload_and_status_write(site: Site, start: Any) -> None:
    proxy = site.cluster.proxy()
    op = start(proxy)
    site.apply(site.edgemodel("detector", V1))
    site.wait("detector", promoted, 60, "v1 promoted")
    held = proxy.add(Rule("PATCH", r"/edgemodels/detector/status", hold=True, times=1))
    writes = len(proxy.requests("PATCH", "/deployments/detector-cpu"))
    em2 = site.edgemodel("detector", V2, version="1.1.0")
    site.apply(em2)
    assert held.hit.wait(30), "the operator wrote no status"
    assert len(proxy.requests("PATCH", "/deployments/detector-cpu")) == writes + 1
    kill(op, proxy)
    start(proxy)
    done = settled(site, "detector", V2, 60, "v1.1.0 promoted by the restarted operator")
    rev = done["status"]["revision"]
    assert len(proxy.requests("PATCH", "/deployments/detector-cpu")) == writes + 1, (
        "the restarted operator wrote the workload again"
    )
    assert not duplicates(site.events("detector")), site.timeline("detector", proxy)
    once(
        site,
        "detector",
        "Updated",
        f"Updated Deployment detector-cpu, Service detector-cpu for revision {rev}",
    )
    once(site, "detector", "Promoted",
         f"Revision {rev} passed its health gates and is now the stable revision")  # fmt: skip
    assert applied_spec_kept(site, em2)


@pytest.mark.scenario(
    "5b",
    "SIGKILL mid-wave (perNode target, three waves over four nodes)",
    "the restarted operator resumes at the wave it was in: every node ends on the new "
    "revision, each wave's pods are replaced once, one Promoted, no rollback, no duplicate "
    "Events",
)
def test_kill_mid_wave(site: Site, start: Any) -> None:
    proxy = site.cluster.proxy()
    op = start(proxy)
    per_node = [{"name": "edge", "accelerator": "cpu", "placement": "perNode"}]
    waves = {"progressDeadlineSeconds": 30, "maxUnavailable": 1,
             "waves": [{"count": 1}, {"percent": 50}, {"percent": 100}]}  # fmt: skip
    site.apply(site.edgemodel("fleet", V1, per_node, rollout=waves))
    site.wait("fleet", promoted, 60, "v1 promoted on every node")
    assert len(site.pods("fleet")) == 4
    site.apply(site.edgemodel("fleet", V2, per_node, version="1.1.0", rollout=waves))

    def deleted() -> int:
        return len([e for e in proxy.requests("DELETE", "/pods/fleet-edge-")
                    if e.outcome.startswith("forwarded")])  # fmt: skip

    wait_until(lambda: deleted() >= 2, timeout=60, what="the second wave to start")
    kill(op, proxy)
    start(proxy)
    done = settled(site, "fleet", V2, 90, "v1.1.0 on every node after the restart")
    assert len(site.pods("fleet")) == 4
    assert not done["status"].get("failedRevisions")
    assert deleted() == 4, f"{deleted()} pod deletions for 4 nodes"
    assert not duplicates(site.events("fleet")), site.timeline("fleet", proxy)
    once(site, "fleet", "Promoted", f"Revision {done['status']['revision']} passed its health "
         "gates and is now the stable revision")  # fmt: skip


@pytest.mark.scenario(
    "5d",
    "SIGKILL mid-rollback (the rollback's workload write lost)",
    "the restarted operator rolls back by itself: one rollback (one RolledBack Event, the "
    "failed revision listed once, counted once in edgemodel_rollbacks_total), the stable "
    "revision serves on every pod, the bad one is not retried",
)
def test_kill_mid_rollback(site: Site, start: Any) -> None:
    proxy = site.cluster.proxy()
    op = start(proxy)
    site.apply(site.edgemodel("detector", V1))
    good = site.wait("detector", promoted, 60, "v1 promoted")["status"]["stableRevision"]
    # The first write rolls out the bad revision; the second, the rollback, is held.
    rollback = proxy.add(Rule("PATCH", r"/deployments/detector-cpu", hold=True, skip=1, times=1))
    site.apply(site.edgemodel("detector", BAD, version="1.1.0"))
    assert rollback.hit.wait(DEADLINE + 30), "no rollback was attempted"
    kill(op, proxy)
    op2 = start(proxy)
    done = site.wait("detector", lambda e: condition(e, "RolledBack").get("status") == "True",
                     DEADLINE + 30, "rolled back by the restarted operator")  # fmt: skip
    status = done["status"]
    bad = status["revision"]
    assert status["stableRevision"] == good != bad
    assert [f["revision"] for f in status["failedRevisions"]] == [bad]
    wait_until(lambda: serves(site, "detector", good, V1), timeout=30,
               what="the stable revision on every pod")  # fmt: skip
    time.sleep(3 * 2)  # a few resync periods: no second rollback, no retry of the bad one
    assert serves(site, "detector", good, V1)
    rolled = [m for _, r, m in site.events("detector") if r == "RolledBack"]
    assert len(rolled) == 1, site.timeline("detector", proxy)
    assert not duplicates(site.events("detector")), site.timeline("detector", proxy)
    assert op2.metric("edgemodel_rollbacks_total", edgemodel="detector") == 1
