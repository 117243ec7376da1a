"""Scenario 9 (two replicas, one leader) and the known start-up bug: an operator started
before the EdgeModel CRD is served never handled EdgeModels."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from clusterkit import wait_until
from kit import CRD, RELEASE, SYSTEM, Site, duplicates, promoted, serves

V1, V2 = "registry.local/detector:1.0", "registry.local/detector:1.1"
LEASE_SECONDS = 6
WRITES = ("PATCH", "POST", "PUT", "DELETE")


def writes(op: Any, exclude: str = "/leases/") -> list[str]:
    """What the operator wrote through its proxy, its Lease aside."""
    return [f"{e.method} {e.target}" for e in op.proxy.log
            if e.method in WRITES and exclude not in e.target]  # fmt: skip


@pytest.mark.scenario(
    "9",
    "Two operator replicas (leader election on a Lease)",
    "only the leader writes anything (the standby makes Lease requests only); after the "
    "leader is SIGKILLed the standby takes over within the lease and promotes the change "
    "made meanwhile, once; no duplicate Events",
)
def test_two_replicas_one_leader(site: Site, start: Any) -> None:
    lease = f"{SYSTEM}/{RELEASE}-edgemodel-operator"  # the Lease the chart lets it hold
    election = {"EDGEMODEL_LEADER_ELECTION": lease,
                "EDGEMODEL_LEADER_LEASE_SECONDS": str(LEASE_SECONDS)}  # fmt: skip
    first = start(**election)
    time.sleep(2)  # the first one takes the Lease
    second = start(**election)
    site.apply(site.edgemodel("detector", V1))
    site.wait("detector", promoted, 60, "v1 promoted")
    holder = json.loads(site.cluster.kubectl("get", "lease", lease.split("/")[1], "-n", SYSTEM,
                                             "-o", "json"))["spec"]["holderIdentity"]  # fmt: skip
    assert writes(first), "the leader wrote nothing"
    assert not writes(second), f"the standby wrote: {writes(second)[:5]}"
    assert [e for e in second.proxy.log if "/leases/" in e.target], "the standby never asked"
    assert holder

    first.process.kill()
    killed_at = time.monotonic()
    site.apply(site.edgemodel("detector", V2, version="1.1.0"))
    done = site.wait(
        "detector",
        lambda e: promoted(e) and serves(site, "detector", e["status"]["revision"], V2),
        LEASE_SECONDS + 60,
        "v1.1.0 promoted by the replica that took over",
    )
    took = time.monotonic() - killed_at
    assert writes(second), "the standby never took over"
    new_holder = json.loads(site.cluster.kubectl("get", "lease", lease.split("/")[1], "-n",
                                                 SYSTEM, "-o", "json"))["spec"]  # fmt: skip
    assert new_holder["holderIdentity"] != holder
    assert new_holder["leaseTransitions"] >= 1
    assert not duplicates(site.events("detector")), site.timeline("detector")
    rev = done["status"]["revision"]
    promoted_events = [m for _, r, m in site.events("detector") if r == "Promoted" and rev in m]
    assert len(promoted_events) == 1
    print(f"took over and promoted in {took:.1f}s")


@pytest.mark.scenario(
    "CRD",
    "Operator started before the EdgeModel CRD is served",
    "the operator waits (liveness answering) until the CRD is served, then handles an "
    "EdgeModel created right after the CRD: workload created, status written",
)
def test_operator_started_before_the_crd(site: Site, start: Any) -> None:
    cluster = site.cluster
    cluster.kubectl("delete", "crd", "edgemodels.edgeai.dev", "--wait=true")
    try:
        op = start()
        time.sleep(3)
        assert op.alive()
        cluster.kubectl("apply", "--server-side", "-f", str(CRD))
        cluster.wait_established()
        site.apply(site.edgemodel("late", V1))
        site.wait("late", promoted, 60, "handled by the operator started before its CRD")
        assert serves(site, "late", site.status("late")["revision"], V1)
    finally:
        cluster.kubectl("apply", "--server-side", "-f", str(CRD))
        wait_until(lambda: "edgemodels" in cluster.kubectl("api-resources", "--api-group",
                                                           "edgeai.dev"), timeout=30,
                   what="the CRD served again")  # fmt: skip
