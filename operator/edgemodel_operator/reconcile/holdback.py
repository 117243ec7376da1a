"""Nodes held back: in a rollout with a success threshold below 100 %, the nodes that
failed stay on the stable revision, run by a DaemonSet of their own, while the rest of
the fleet moves on. What they run is kept in status.heldBack until they rejoin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgemodel_operator.api.accelerators import AcceleratorProfile
from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.spec import parse_spec
from edgemodel_operator.reconcile.observed import NodeInfo
from edgemodel_operator.reconcile.placement import per_node, place_targets
from edgemodel_operator.reconcile.rollout_state import RolloutState
from edgemodel_operator.reconcile.workloads import Nodes, Owner, WorkloadSettings, build_workload


def held_nodes(state: RolloutState, target: str) -> tuple[str, ...]:
    return tuple(h.node for h in state.held if h.target == target)


def held_back(
    previous: Mapping[str, Any], state: RolloutState, stable_images: Mapping[str, str],
    stable_archs: Mapping[str, Sequence[str]],
) -> dict[str, Any] | None:  # fmt: skip
    """What held-back nodes run: the stable revision of when the first node was held
    (kept after the new one is promoted), or None when no node is held or there is no
    stable revision to hold them on."""
    if not state.held:
        return None
    kept = previous.get("heldBack")
    if kept:
        return dict(kept)
    if not state.stable_spec or not state.stable_revision:
        return None
    return {"revision": state.stable_revision, "spec": dict(state.stable_spec),
            "images": dict(stable_images), "architectures": dict(stable_archs)}  # fmt: skip


def held_workloads(
    owner: Owner, holdback: Mapping[str, Any], state: RolloutState, nodes: Sequence[NodeInfo],
    accelerators: Mapping[str, AcceleratorProfile], workload_settings: WorkloadSettings,
    server_archs: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:  # fmt: skip
    """A DaemonSet per target with held nodes, running the held-back revision there only."""
    try:
        spec = parse_spec(holdback["spec"])
    except InvalidSpec:
        return []  # a spec this version cannot read: the nodes stay out of the rollout
    out = []
    for placement in place_targets(spec, nodes, accelerators, holdback.get("architectures") or {},
                            server_archs):  # fmt: skip
        held = held_nodes(state, placement.target.name)
        if held and per_node(placement):
            out.append(build_workload(owner, spec, placement, workload_settings,
                                      holdback["revision"], Nodes(only=held)))  # fmt: skip
    return out
