"""Where a target runs: its accelerator's node selector, resource and tolerations, the
nodes that match them now, and the fallback accelerator when none do."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgemodel_operator.api.accelerators import AcceleratorProfile
from edgemodel_operator.api.spec import (
    ALLOWED_PRECISION,
    DEFAULT_PRECISION,
    EdgeModelSpec,
    Target,
)
from edgemodel_operator.reconcile.observed import CONTROLLER_TAINTS, NodeInfo

HARD_EFFECTS = ("NoSchedule", "NoExecute")
# Taints the node controller sets on nodes that are down or cordoned: availability, not fit.
STATE_TAINTS = CONTROLLER_TAINTS | {"node.kubernetes.io/unschedulable"}


@dataclass(frozen=True)
class Placement:
    target: Target
    accelerator: str  # the one it runs on: the requested one, or the fallback
    precision: str
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    resource: str | None
    nodes: tuple[str, ...]  # names of the nodes that can run it now
    fell_back: bool = False
    message: str = ""  # why it is not where it was asked to be; empty when it is
    # Nodes made for it that cannot run anything now: (name, why), e.g. NotReady, cordoned.
    unavailable: tuple[tuple[str, str], ...] = ()
    archs: tuple[str, ...] | None = None  # what its image serves; None: not known
    runtime_class: str | None = None
    no_image: tuple[str, ...] = ()  # nodes made for it whose architecture its image lacks

    @property
    def has_nodes(self) -> bool:
        return bool(self.nodes)


def selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def tolerates(taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def fits(
    node: NodeInfo,
    selector: Mapping[str, str],
    resource: str | None,
    tolerations: Sequence[Mapping[str, Any]],
) -> bool:
    """The node is made for the target: labels, resource, tolerated taints (whether it is
    up right now is `unavailable`'s business)."""
    if not selector.items() <= node.labels.items():
        return False
    if resource and node.allocatable.get(resource, "0") in ("0", ""):
        return False
    return all(
        tolerates(taint, tolerations)
        for taint in node.taints
        if taint.get("effect") in HARD_EFFECTS and taint.get("key") not in STATE_TAINTS
    )


def can_run(
    node: NodeInfo,
    selector: Mapping[str, str],
    resource: str | None,
    tolerations: Sequence[Mapping[str, Any]],
) -> bool:
    return not node.unavailable and node.schedulable and fits(node, selector, resource, tolerations)


def _candidate(
    target: Target, accelerator: str, profile: AcceleratorProfile, nodes: Sequence[NodeInfo]
) -> Placement:
    selector = {**profile.node_selector, **target.node_selector}
    tolerations = (*profile.tolerations, *target.tolerations)
    precision = target.precision
    if precision not in ALLOWED_PRECISION[accelerator]:
        precision = DEFAULT_PRECISION[accelerator]
    made_for = [n for n in nodes if fits(n, selector, profile.resource, tolerations)]
    matching = sorted(n.name for n in made_for if not n.unavailable)
    down = tuple(sorted((n.name, n.unavailable) for n in made_for if n.unavailable))
    return Placement(
        unavailable=down,
        target=target,
        accelerator=accelerator,
        precision=precision,
        node_selector=selector,
        tolerations=tolerations,
        resource=profile.resource,
        nodes=tuple(matching),
        runtime_class=profile.runtime_class,
    )


def unavailable_text(placement: Placement, limit: int = 5) -> str:
    shown = [f"{name} ({why})" for name, why in placement.unavailable[:limit]]
    more = len(placement.unavailable) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _no_nodes(placement: Placement) -> str:
    if placement.unavailable:
        return f"every node it runs on is unavailable: {unavailable_text(placement)}"
    what = f"no schedulable node matches {selector_text(placement.node_selector)}"
    if placement.resource:
        what += f" with {placement.resource} allocatable"
    return what


def place(
    target: Target,
    nodes: Sequence[NodeInfo],
    profiles: Mapping[str, AcceleratorProfile],
    narrow: Callable[[Placement], Placement] = lambda p: p,
) -> Placement:
    """Place on the requested accelerator; when no node can run it there and a fallback is
    set, place on the fallback (the target's own nodeSelector and tolerations still apply).
    `narrow` keeps the nodes its image can run on (see for_architectures)."""
    first = narrow(_candidate(target, target.accelerator, profiles[target.accelerator], nodes))
    if first.has_nodes:
        return first
    reason = first.message or f"target {target.name}: {_no_nodes(first)}"
    if target.fallback is None:
        return replace(first, message=reason)
    second = narrow(_candidate(target, target.fallback, profiles[target.fallback], nodes))
    if not second.has_nodes:
        why = second.message.partition(": ")[2] if second.message else _no_nodes(second)
        return replace(first, message=f"{reason}; fallback {target.fallback}: {why}")
    precision = "" if second.precision == target.precision else f" in {second.precision}"
    note = f"{reason}; running on {target.fallback}{precision} (fallback)"
    return replace(second, fell_back=True, message=note)


ARCH_LABEL = "kubernetes.io/arch"


def node_arch(node: NodeInfo) -> str:
    return node.labels.get(ARCH_LABEL, "amd64")


def for_architectures(
    placement: Placement, archs: Sequence[str] | None, nodes: Sequence[NodeInfo]
) -> Placement:
    """Keep the nodes whose architecture the target's image serves (`archs`, from its
    index); the others are named, not crash-looped on."""
    if archs is None:
        return placement
    by_name = {n.name: n for n in nodes}
    keep = tuple(n for n in placement.nodes if node_arch(by_name[n]) in archs)
    dropped = tuple(n for n in placement.nodes if n not in keep)
    narrowed = replace(placement, archs=tuple(sorted(archs)), nodes=keep, no_image=dropped,
                       unavailable=tuple(u for u in placement.unavailable
                                         if node_arch(by_name[u[0]]) in archs))  # fmt: skip
    if dropped and not keep:
        note = f"target {placement.target.name}: {no_image_text(narrowed)}"
        return replace(narrowed, message=note)
    return narrowed


def no_image_text(placement: Placement, limit: int = 5) -> str:
    shown = ", ".join(placement.no_image[:limit])
    more = len(placement.no_image) - limit
    variant = f"{placement.accelerator}/{placement.precision}"
    return (
        f"no image for the architecture of node(s) {shown}"
        f"{f' and {more} more' if more > 0 else ''}: the {variant} image serves "
        f"{', '.join(placement.archs or ())} only"
    )


def place_targets(
    spec: EdgeModelSpec, nodes: Sequence[NodeInfo], accelerators: Mapping[str, AcceleratorProfile],
    archs: Mapping[str, Sequence[str]] | None = None,
    server_archs: Mapping[str, Sequence[str]] | None = None,
) -> list[Placement]:  # fmt: skip
    """Each target's placement, only on nodes of the architectures its image serves: its
    built image's (`archs`, by variant), else its server image's (`server_archs`, by
    accelerator); a target's own image is taken as it is. A target whose image runs on
    none of its nodes goes to its fallback, like one whose hardware is missing."""

    def narrow(p: Placement) -> Placement:
        if p.target.image:
            return p
        built = (archs or {}).get(variant_key(p.accelerator, p.precision))
        served = built if built is not None else (server_archs or {}).get(p.accelerator)
        return for_architectures(p, served, nodes)

    return [place(t, nodes, accelerators, narrow) for t in spec.targets]


def variant_key(accelerator: str, precision: str) -> str:
    return f"{accelerator}/{precision}"


def per_node(placement: Placement) -> bool:
    return placement.target.placement == "perNode"


def workload_kind(placement: Placement) -> str:
    return "DaemonSet" if placement.target.placement == "perNode" else "Deployment"
