"""Fleet rollouts in waves for perNode targets: which nodes belong to which wave, and which
pods to replace now so that a DaemonSet (updateStrategy OnDelete) moves node by node.

Waves are cumulative: [{percent: 5}, {percent: 25}, {percent: 100}] means 5% of the nodes,
then 25%, then all of them. Canary nodes (rollout.canarySelector) go first."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from edgemodel_operator.api.spec import Wave
from edgemodel_operator.reconcile.health import pod_ready, pod_revision


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
