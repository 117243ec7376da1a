"""Scenario 10: a rollout across 1,500 simulated nodes while 10 % of them flap NotReady
(their Ready condition toggled every few seconds, as a flaky site uplink does): the
operator moves the fleet once, wave by wave, and does not thrash or roll back twice.
It runs last: the extra nodes stay until the session's cluster goes."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from clusterkit import wait_until
from kit import Site, duplicates, promoted, serves
from kubernetes import client

NODES = 1500
FLAPPING = NODES // 10
V1, V2 = "registry.local/detector:1.0", "registry.local/detector:1.1"


def ready_condition(status: str) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = status == "True"
    return {"type": "Ready", "status": status, "lastHeartbeatTime": now,
            "lastTransitionTime": now, "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is ready" if ready else "flapping (fault test)"}  # fmt: skip


class Flapper:
    """Toggles the Ready condition of `nodes` (half of them at a time, every `period` s)."""

    def __init__(self, core: client.CoreV1Api, nodes: list[str], period: float) -> None:
        self.core, self.nodes, self.period = core, nodes, period
        self.stop = threading.Event()
        self.flips = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def set(self, node: str, status: str) -> None:
        body = {"status": {"conditions": [ready_condition(status)]}}
        self.core.patch_node_status(node, body)
        self.flips += 1

    def _run(self) -> None:
        rng = random.Random(10)
        while not self.stop.is_set():
            for node in self.nodes:
                self.set(node, "False" if rng.random() < 0.5 else "True")
                if self.stop.is_set():
                    break
            self.stop.wait(self.period)
        for node in self.nodes:  # leave the fleet healthy
            self.set(node, "True")


@pytest.mark.slow
@pytest.mark.scenario(
    "10",
    "1,500 nodes, 10 % flapping NotReady during a wave rollout",
    "the new revision reaches every node and is promoted once; the DaemonSet template is "
    "written once, no node's pod is replaced twice, no rollback, no duplicate Events",
)
def test_fleet_rollout_with_flapping_nodes(site: Site, start: Any) -> None:
    cluster = site.cluster
    from kit import devcluster

    devcluster(cluster.state, cluster.port_base, "up", f"--fleet=gpu=2,npu=2,cpu={NODES}",
               "--real-nodes=0")  # fmt: skip
    proxy = cluster.proxy()
    start(proxy, EDGEMODEL_RESYNC_SECONDS="5")
    fleet = [{"name": "edge", "accelerator": "cpu", "placement": "perNode"}]
    rollout = {"progressDeadlineSeconds": 180, "maxUnavailable": "25%",
               "waves": [{"percent": 10}, {"percent": 100}]}  # fmt: skip
    site.apply(site.edgemodel("fleet", V1, fleet, rollout=rollout))
    first = site.wait("fleet", promoted, 300, f"v1 on {NODES} nodes")
    assert len(site.pods("fleet")) == NODES

    cpu = sorted(n.metadata.name for n in cluster.core.list_node(
        label_selector="edgeai.dev/accelerator=cpu").items)  # fmt: skip
    flapper = Flapper(cluster.core, random.Random(1).sample(cpu, FLAPPING), period=4)
    mark = len(proxy.log)
    flapper.thread.start()
    try:
        site.apply(site.edgemodel("fleet", V2, fleet, version="1.1.0", rollout=rollout))
        wait_until(lambda: site.status("fleet").get("revision") != first["status"]["revision"],
                   timeout=60, what="the rollout to start")  # fmt: skip
        time.sleep(20)  # the rollout goes on under flapping nodes
    finally:
        flapper.stop.set()
        flapper.thread.join(120)
    done = site.wait(
        "fleet",
        lambda e: promoted(e) and serves(site, "fleet", e["status"]["revision"], V2),
        300,
        f"v1.1.0 on all {NODES} nodes",
    )
    writes = proxy.log[mark:]
    templates = [e for e in writes if e.method == "PATCH" and "/daemonsets/fleet-edge" in e.target]
    deleted = [e.target.split("/pods/")[1].split("?")[0] for e in writes
               if e.method == "DELETE" and "/pods/" in e.target]  # fmt: skip
    assert len(templates) == 1, f"the DaemonSet template was written {len(templates)} times"
    assert len(deleted) == len(set(deleted)), "a pod was deleted twice"
    assert len(deleted) <= NODES
    status = done["status"]
    assert not status.get("failedRevisions"), status.get("failedRevisions")
    events = site.events("fleet")
    assert not [e for e in events if e[1] == "RolledBack"], site.timeline("fleet")
    assert not duplicates(events), site.timeline("fleet")
    print(f"{flapper.flips} Ready flips on {FLAPPING} nodes; {len(deleted)} pods replaced")
