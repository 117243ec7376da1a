"""The workloads' own counts against the indices' pods (reconcile/freshness.py)."""

from __future__ import annotations

from typing import Any

from edgemodel_operator.reconcile.freshness import counted, indices_agree
from edgemodel_operator.reconcile.observed import Observed


def daemonset(status: dict[str, Any], generation: int = 3) -> dict[str, Any]:
    return {
        "kind": "DaemonSet",
        "metadata": {"name": "digits-npu", "generation": generation,
                     "labels": {"edgeai.dev/target": "npu"}},
        "spec": {"template": {"metadata": {"annotations": {"edgeai.dev/revision": "v2"}}}},
        "status": {"observedGeneration": 3, **status},
    }  # fmt: skip


def pod(node: str, revision: str, ready: bool, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"npu-{node}-{revision}",
        "creationTimestamp": f"2026-12-02T0{revision[1]}:00:00Z",  # v1's pods are older
        "labels": {"edgeai.dev/target": "npu"},
        "annotations": {"edgeai.dev/revision": revision},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T07:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}  # fmt: skip


# Three nodes: two on v2 (one Ready), one still on v1 and Ready.
PODS = [pod("a", "v2", True), pod("b", "v2", False), pod("c", "v1", True)]
COUNTS = {"currentNumberScheduled": 3, "updatedNumberScheduled": 2, "numberReady": 2}


def test_a_daemonset_counts_nodes_running_updated_and_ready() -> None:
    assert counted(daemonset({**COUNTS, "numberMisscheduled": 1})) == (4, 2, 2)
    assert counted(daemonset(COUNTS, generation=4)) is None  # its controller is behind


def test_the_indices_agree_only_when_every_count_matches() -> None:
    assert indices_agree([daemonset(COUNTS)], Observed([], [], PODS))
    # A pod turned Ready, one updated, one more scheduled: each is a disagreement.
    for key in COUNTS:
        assert not indices_agree([daemonset({**COUNTS, key: COUNTS[key] + 1})],
                                 Observed([], [], PODS))  # fmt: skip
    # During a surge node c runs its new pod beside the old one: the controller counts the
    # node by its oldest pod, Ready and not updated, and so do the indices.
    surge = Observed([], [], [*PODS, pod("c", "v2", False)])
    assert indices_agree([daemonset(COUNTS)], surge)
    # A pod being deleted is not counted by the controller either.
    assert indices_agree(
        [daemonset(COUNTS)], Observed([], [], [*PODS, pod("d", "v2", False, deleting=True)])
    )
    # Nothing to compare (no workload, or one behind): the indices are not trusted.
    assert not indices_agree([], Observed([], [], PODS))
    assert not indices_agree([daemonset(COUNTS, generation=4)], Observed([], [], PODS))
