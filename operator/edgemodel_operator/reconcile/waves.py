"""Fleet rollouts in waves for perNode targets: which nodes belong to which wave, and which
pods to replace now so that a DaemonSet (updateStrategy OnDelete) moves node by node.

Waves are cumulative: [{percent: 5}, {percent: 25}, {percent: 100}] means 5% of the nodes,
then 25%, then all of them. Canary nodes (rollout.canarySelector) go first."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from edgemodel_operator.api.spec import EdgeModelSpec, Wave
from edgemodel_operator.reconcile.health import pod_ready, pod_revision
from edgemodel_operator.reconcile.holdback import held_nodes
from edgemodel_operator.reconcile.observed import NodeInfo
from edgemodel_operator.reconcile.placement import Placement, per_node
from edgemodel_operator.reconcile.rollout import Action, Plan


def node_order(
    nodes: Sequence[str], labels: Mapping[str, Mapping[str, str]], canary: Mapping[str, str]
) -> list[str]:
    """Canary nodes first, then the rest; by name within each group (stable across runs)."""

    def is_canary(node: str) -> bool:
        return bool(canary) and all(labels.get(node, {}).get(k) == v for k, v in canary.items())

    return sorted(nodes, key=lambda n: (not is_canary(n), n))


def wave_sizes(waves: Sequence[Wave], total: int) -> list[int]:
    """How many nodes each wave covers (cumulative, never shrinking); all of them last."""
    sizes: list[int] = []
    for wave in waves:
        size = math.ceil(total * wave.percent / 100) if wave.percent else (wave.count or 0)
        sizes.append(min(total, max(size, sizes[-1] if sizes else 1)))
    if not sizes or sizes[-1] < total:
        sizes.append(total)
    return sizes


def unavailable_budget(max_unavailable: int | str, total: int) -> int:
    if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
        return max(1, math.ceil(total * int(max_unavailable[:-1]) / 100))
    return max(1, int(max_unavailable))


def pods_to_replace(
    order: Sequence[str],
    upto: int,
    pods: Sequence[Mapping[str, Any]],
    revision: str,
    budget: int,
    settling: Collection[str] = (),
) -> list[str]:
    """Names of pods on the first `upto` nodes that are not on `revision`, to delete now.
    Nodes already moving (their pod not Ready, or no pod yet) use up the budget first;
    pods on `settling` nodes (just back up) wait until the node controller has seen them."""
    by_node: dict[str, Mapping[str, Any]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and not pod["metadata"].get("deletionTimestamp"):
            by_node[node] = pod
    in_flight = sum(1 for n in order[:upto] if n not in by_node or not pod_ready(by_node[n]))
    chosen: list[str] = []
    for node in order[:upto]:
        found = by_node.get(node)
        if found is None or node in settling:
            continue
        pod = found
        if pod_revision(pod) == revision:
            continue
        if pod_ready(pod) and in_flight + len(chosen) >= budget:
            continue  # a serving pod waits for room under maxUnavailable
        chosen.append(str(pod["metadata"]["name"]))
    return chosen


def paced(spec: EdgeModelSpec, placement: Placement) -> bool:
    """The operator moves this target's nodes itself (waves, or a success threshold)."""
    return spec.rollout.paced and per_node(placement)


def pods_to_move(
    spec: EdgeModelSpec, placement: Placement, nodes: Sequence[NodeInfo], plan: Plan,
    revision: str, pods: Sequence[Mapping[str, Any]],
) -> list[str]:  # fmt: skip
    """Pods of a waved target to delete now so that the DaemonSet recreates them on
    `revision`: the current wave's nodes while rolling forward, every node otherwise."""
    if plan.action is Action.HOLD:
        return []  # nothing better to go to: leave the fleet as it is
    labels = {n.name: n.labels for n in nodes}
    order = node_order(placement.nodes, labels, spec.rollout.canary_selector)
    total = len(order)
    held = set(held_nodes(plan.state, placement.target.name))
    order = [n for n in order if n not in held]  # their pods belong to the held DaemonSet
    if plan.action is Action.ROLL_FORWARD:
        sizes = wave_sizes(spec.rollout.waves, total)
        upto = sizes[min(plan.state.wave, len(sizes) - 1)]
        budget = unavailable_budget(spec.rollout.max_unavailable, total)
    else:  # promote, steady, roll back, hold stable: converge every node at once
        upto, budget = total, total
    settling = {n.name for n in nodes if n.settling}
    return pods_to_replace(order, upto - len(held), pods, revision, budget, settling)
