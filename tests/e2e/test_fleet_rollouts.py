"""Fleet rollouts on a fleet as it is: a 12-node fleet of the session's own simulated
boards, one of them cordoned, offline, or crash-looping on the new version only (KWOK
stages: the node label kwok.edgeai.dev/offline and an image tag crash-on-<node>). The
operator runs at its default resync (10 s): what it does within a few seconds, it does on
the watch events, not on the timer."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterkit import (
    POOL_LABEL,
    POOL_PREFIX,
    POOL_TAINT,
    SIMULATED_ONLY,
    Cluster,
    OperatorProcess,
    wait_until,
)
from test_edgemodel import apply, condition, get_em, minimal, wait_condition
from test_rollout import events, pods_by_node, promoted, with_image

from conftest import ROOT, start_operator

FLEET_LABEL = ("edgeai.dev/fleet", POOL_PREFIX)
NODES = [f"{POOL_PREFIX}-fleet-{i}" for i in range(12)]
OFFLINE = "kwok.edgeai.dev/offline"
GOOD, NEXT = "edgemodel-server:1.0.0-cpu", "edgemodel-server:1.1.0-cpu"


@pytest.fixture(scope="module")
def fleet(cluster: Cluster, pool: list[str]) -> Iterator[list[str]]:
    """Twelve CPU boards of this session, apart from the other tests' pool nodes."""
    sys.path.insert(0, str(ROOT / "hack"))
    import devcluster

    items = []
    for i, name in enumerate(NODES):
        node = devcluster.node_manifest(name, devcluster.node_kinds("cpu", i))
        node["metadata"]["labels"].update({POOL_LABEL[0]: POOL_LABEL[1],
                                           FLEET_LABEL[0]: FLEET_LABEL[1]})  # type: ignore[index]  # fmt: skip
        node["spec"]["taints"] = [*node["spec"]["taints"], POOL_TAINT]  # type: ignore[index]
        items.append(node)
    existing = {n.metadata.name for n in cluster.core.list_node().items}
    new = [n for n in items if n["metadata"]["name"] not in existing]  # type: ignore[index]
    if new:
        listed = {"apiVersion": "v1", "kind": "List", "items": new}
        cluster.kubectl("create", "-f", "-", input=json.dumps(listed))
    wait_until(lambda: all(ready(cluster, n) for n in NODES), timeout=60,
               what="the 12 fleet nodes to be Ready")  # fmt: skip
    yield NODES
    for name in NODES:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def default_operator(
    cluster: Cluster, crd: Path, fleet: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("fleet-operator") / "operator.log"
    proc = start_operator(cluster, log, EDGEMODEL_ACCELERATORS=SIMULATED_ONLY,
                          EDGEMODEL_RESYNC_SECONDS="10")  # fmt: skip
    yield proc
    proc.stop()


pytestmark = pytest.mark.usefixtures("default_operator")


def ready(cluster: Cluster, node: str) -> bool:
    found = cluster.core.read_node(node)
    return any(c.type == "Ready" and c.status == "True" for c in found.status.conditions or [])


def fleet_model(name: str, image: str, **rollout: Any) -> dict[str, Any]:
    em = minimal(name, [{"name": "edge", "accelerator": "cpu", "placement": "perNode",
                         "image": image, "nodeSelector": dict([FLEET_LABEL])}])  # fmt: skip
    em["spec"]["rollout"] = {"progressDeadlineSeconds": 30, **rollout}
    em["spec"]["serving"] = {"probe": {"periodSeconds": 2, "failureThreshold": 2}}
    return em


def images_by_node(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    return {n: img for n, (_, img, _) in pods_by_node(cluster, namespace, name).items()}


def progress(em: dict[str, Any]) -> str:
    return str(em["status"]["rollout"]["progress"]["summary"])


def test_one_board_crash_looping_at_90_percent_is_held_back_and_the_rest_update(
    cluster: Cluster, namespace: str
) -> None:
    broken = NODES[7]
    em = fleet_model("sensors", GOOD, successThreshold=90)
    apply(cluster, namespace, em)
    good = promoted(cluster, namespace, "sensors")["status"]["stableRevision"]
    apply(cluster, namespace, with_image(em, f"edgemodel-server:1.1.0-crash-on-{broken}"))
    done = promoted(cluster, namespace, "sensors")
    status = done["status"]
    assert status["stableRevision"] != good
    assert [(h["node"], h["reason"]) for h in status["rollout"]["heldNodes"]] == [
        (broken, "CrashLooping")
    ]
    assert "ModelLoadFailed" in status["rollout"]["heldNodes"][0]["evidence"]
    assert progress(done) == "11 of 12 nodes updated (91.7 %), 0 unavailable, 1 failed"
    assert status["heldBack"]["revision"] == good
    degraded = condition(done, "Degraded")
    assert degraded["reason"] == "NodesHeldBack" and broken in degraded["message"]
    # the broken board is back on the stable version, Ready, from a DaemonSet of its own
    wait_until(
        lambda: (p := pods_by_node(cluster, namespace, "sensors").get(broken))
        and p[1] == GOOD and p[2],
        timeout=30, what=f"{broken} to serve the stable version again",
    )  # fmt: skip
    held = cluster.apps.read_namespaced_daemon_set("sensors-edge-held", namespace)
    assert held.status.desired_number_scheduled == 1
    others = {n: img for n, img in images_by_node(cluster, namespace, "sensors").items()
              if n != broken}  # fmt: skip
    assert len(others) == 11 and all("crash-on" in img for img in others.values())
    reasons = [r for _, r in events(cluster, namespace, "sensors")]
    assert reasons.count("NodesHeldBack") == 1 and "RolledBack" not in reasons


def test_one_board_crash_looping_at_100_percent_rolls_back_on_the_event_not_the_timer(
    cluster: Cluster, namespace: str
) -> None:
    broken = NODES[3]
    em = fleet_model("cameras", GOOD)
    apply(cluster, namespace, em)
    good = promoted(cluster, namespace, "cameras")["status"]["stableRevision"]
    apply(cluster, namespace, with_image(em, f"edgemodel-server:1.1.0-crash-on-{broken}"))

    def crash_seen() -> bool:
        for p in cluster.core.list_namespaced_pod(namespace).items:
            for cs in p.status.container_statuses or []:
                if cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff":
                    return True
        return False

    wait_until(crash_seen, timeout=60, every=0.1, what="the crash loop on the broken board")
    seen = time.monotonic()
    rolled = wait_condition(cluster, namespace, "cameras", "RolledBack", "True", timeout=30)
    after = time.monotonic() - seen
    assert after < 8, f"rolled back {after:.1f}s after the crash loop showed (resync is 10 s)"
    assert rolled["status"]["stableRevision"] == good
    assert rolled["status"]["failedRevisions"][-1]["reason"] == "CrashLooping"
    assert broken in condition(rolled, "Degraded")["message"]
    wait_until(
        lambda: (imgs := images_by_node(cluster, namespace, "cameras"))
        and len(imgs) == 12 and set(imgs.values()) == {GOOD},
        timeout=60, what="all 12 boards back on the stable version",
    )  # fmt: skip


def test_a_cordoned_board_does_not_stall_the_waves_and_catches_up_when_uncordoned(
    cluster: Cluster, namespace: str
) -> None:
    cordoned = NODES[4]  # in the second wave (nodes go by name)
    em = fleet_model("doors", GOOD, waves=[{"percent": 50}, {"percent": 100}])
    apply(cluster, namespace, em)
    promoted(cluster, namespace, "doors")
    cluster.core.patch_node(cordoned, {"spec": {"unschedulable": True}})
    try:
        apply(cluster, namespace, with_image(em, NEXT))
        done = promoted(cluster, namespace, "doors")
        assert progress(done) == "11 of 12 nodes updated (91.7 %), 1 unavailable, 0 failed"
        target = done["status"]["targets"][0]
        assert (target["desired"], target["unavailable"]) == (11, 1)
        assert images_by_node(cluster, namespace, "doors")[cordoned] == GOOD  # left alone
    finally:
        cluster.core.patch_node(cordoned, {"spec": {"unschedulable": None}})
    wait_until(lambda: images_by_node(cluster, namespace, "doors").get(cordoned) == NEXT,
               timeout=30, what=f"{cordoned} to catch up")  # fmt: skip
    wait_until(
        lambda: progress(get_em(cluster, namespace, "doors")).startswith("12 of 12"),
        timeout=30, what="all 12 boards updated",
    )  # fmt: skip
    wait_until(lambda: "CaughtUp" in [r for _, r in events(cluster, namespace, "doors")],
               timeout=15, what="a CaughtUp Event")  # fmt: skip
    assert "CatchingUp" in [r for _, r in events(cluster, namespace, "doors")]


def test_a_board_offline_during_a_wave_is_left_out_and_updated_when_it_is_back(
    cluster: Cluster, namespace: str
) -> None:
    away = NODES[8]  # in the second wave
    em = fleet_model("shelves", GOOD, waves=[{"percent": 50}, {"percent": 100}])
    apply(cluster, namespace, em)
    promoted(cluster, namespace, "shelves")
    apply(cluster, namespace, with_image(em, NEXT))
    cluster.core.patch_node(away, {"metadata": {"labels": {OFFLINE: "true"}}})
    try:
        wait_until(lambda: not ready(cluster, away), timeout=20, what=f"{away} offline")
        done = promoted(cluster, namespace, "shelves")
        assert progress(done) == "11 of 12 nodes updated (91.7 %), 1 unavailable, 0 failed"
        assert condition(done, "Degraded")["reason"] == "NodesUnavailable"
        assert away in condition(done, "Degraded")["message"]
        assert "RolledBack" not in [r for _, r in events(cluster, namespace, "shelves")]
    finally:
        cluster.core.patch_node(away, {"metadata": {"labels": {OFFLINE: None}}})
    wait_until(lambda: ready(cluster, away), timeout=20, what=f"{away} back online")
    wait_until(
        lambda: progress(get_em(cluster, namespace, "shelves")).startswith("12 of 12"),
        timeout=40, what=f"{away} to catch up",
    )  # fmt: skip
    assert images_by_node(cluster, namespace, "shelves")[away] == NEXT
    assert condition(get_em(cluster, namespace, "shelves"), "Degraded")["status"] == "False"
