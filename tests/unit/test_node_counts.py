"""A per-node target counted over its available nodes, as status and progress read it."""

from __future__ import annotations

from typing import Any

from edgemodel_operator.api.names import HELD_LABEL, REVISION_ANNOTATION
from edgemodel_operator.reconcile.status import TargetObservation, node_counts, unschedulable


def _pod(node: str | None, revision: str, ready: bool = True, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {REVISION_ANNOTATION: revision}, **meta},
        "spec": {"nodeName": node} if node else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_node_counts_leave_out_other_nodes_and_terminating_pods_and_keep_held_ones_apart() -> None:
    workload = {"spec": {"template": {"metadata": {"annotations": {REVISION_ANNOTATION: "r2"}}}},
                "status": {"desiredNumberScheduled": 5}}  # fmt: skip
    pods = [
        _pod("n1", "r2"),  # updated and Ready
        _pod("n2", "r2", ready=False),  # updated, not Ready yet
        _pod("n3", "r1"),  # outdated
        _pod("n4", "r1", labels={HELD_LABEL: "true"}),  # held back: Ready, not outdated
        _pod("n5", "r2", deletionTimestamp="2026-12-03T00:00:00Z"),  # going away
        _pod("offline-1", "r2"),  # on a node that is not available
    ]
    seen = TargetObservation(workload, pods, nodes=frozenset({"n1", "n2", "n3", "n4", "n5"}),
                             held=1)  # fmt: skip
    counts = node_counts(seen)
    assert (counts.desired, counts.ready, counts.updated, counts.updated_ready) == (5, 3, 2, 1)
    assert (counts.outdated, counts.failed) == (1, 1)
    assert node_counts(seen, "r1").updated == 1  # the held pod is not counted as the rollout's


def test_only_pods_waiting_for_a_node_are_unschedulable() -> None:
    waiting = _pod(None, "r1", ready=False)
    why = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: none"
    waiting["status"]["conditions"].append(
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}
    )
    assert unschedulable([waiting, _pod("n1", "r1")]) == (
        1, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )  # fmt: skip
