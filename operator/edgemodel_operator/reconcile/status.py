"""Status from placements and what the children report; Events from status transitions.
The rollout's part of it is in rollout_status.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from edgemodel_operator.api import conditions as c
from edgemodel_operator.api.names import HELD_LABEL
from edgemodel_operator.reconcile.health import pod_ready, pod_revision
from edgemodel_operator.reconcile.placement import Placement, no_image_text, unavailable_text
from edgemodel_operator.reconcile.workloads import running_image, workload_name

MAX_NODES_LISTED = 20


@dataclass(frozen=True)
class TargetObservation:
    workload: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    service: str = ""  # the Service apps call
    endpoints: int = 0  # its ready endpoints
    pending: bool = False  # the workload was just (re)written: its status is not yet about it
    precision: str = ""  # what it serves; "original": the model as published, not optimized
    nodes: frozenset[str] | None = None  # a per-node target's available nodes; None: replicas
    held: int = 0  # of those, nodes held back on the stable revision


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Counts:
    desired: int
    ready: int
    updated: int
    current: bool  # the controller has seen the latest generation of the workload
    failed: int = 0  # nodes held back on the stable revision (a per-node target)
    outdated: int = 0  # available nodes whose pod runs another revision (a per-node target)
    updated_ready: int = 0  # pods on the running revision and Ready


def counts(workload: Mapping[str, Any] | None) -> Counts:
    if workload is None:
        return Counts(0, 0, 0, False)
    meta, spec = workload.get("metadata") or {}, workload.get("spec") or {}
    status = workload.get("status") or {}
    current = status.get("observedGeneration", 0) >= meta.get("generation", 1)
    if workload.get("kind") == "DaemonSet":
        return Counts(
            desired=int(status.get("desiredNumberScheduled", 0)),
            ready=int(status.get("numberReady", 0)),
            updated=int(status.get("updatedNumberScheduled", 0)),
            current=current,
        )
    return Counts(
        desired=int(spec.get("replicas", 1)),
        ready=int(status.get("readyReplicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        current=current,
    )


def node_counts(seen: TargetObservation, revision: str | None = None) -> Counts:
    """A per-node target counted over its available nodes (offline and cordoned ones left
    out): pods there, on `revision` (default: the one its workload runs), and Ready."""
    base = counts(seen.workload)
    nodes = seen.nodes or frozenset()
    template = ((seen.workload or {}).get("spec") or {}).get("template") or {}
    running = revision or pod_revision(template)
    ready = main = updated = updated_ready = 0
    for p in seen.pods:  # one loop: a fleet's pods, counted a few times a pass
        meta = p.get("metadata") or {}
        if (p.get("spec") or {}).get("nodeName") not in nodes or meta.get("deletionTimestamp"):
            continue
        is_ready = pod_ready(p)
        ready += is_ready
        if HELD_LABEL in (meta.get("labels") or {}):
            continue
        main += 1
        if pod_revision(p) == running:
            updated += 1
            updated_ready += is_ready
    return Counts(
        desired=len(nodes),
        ready=ready,
        updated=updated,
        current=base.current,
        failed=seen.held,
        outdated=main - updated,
        updated_ready=updated_ready,
    )


def _nodes(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted(
        {
            str(p["spec"]["nodeName"])
            for p in pods
            if (p.get("spec") or {}).get("nodeName")
            and not (p.get("metadata") or {}).get("deletionTimestamp")
        }
    )


def unschedulable(pods: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """How many pods the scheduler cannot place, and its explanation for one of them."""
    count, why = 0, ""
    for p in pods:
        if (p.get("spec") or {}).get("nodeName"):
            continue  # bound: the scheduler placed it
        for cond in (p.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                count += 1
                # "0/12 nodes are available: 3 Insufficient nvidia.com/gpu, ... . preemption: ..."
                why = why or str(cond.get("message", "")).split(". ")[0].rstrip(".") + "."
    return count, why


def _target_ready(counts_: Counts, placement: Placement) -> bool:
    return (
        placement.has_nodes
        and counts_.current
        and counts_.ready >= counts_.desired
        and counts_.updated + counts_.failed >= counts_.desired
    )


def build_status(
    *,
    model: str,
    generation: int,
    revision: str,
    placements: Sequence[Placement],
    observed: Mapping[str, TargetObservation],
    previous: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    targets: list[dict[str, Any]] = []
    not_ready: list[str] = []
    rolling: list[str] = []  # not ready, but with nodes to run on: the rollout is under way
    blocked: list[str] = []  # pods the scheduler cannot place (device taken, too little CPU)
    for p in placements:
        seen = observed.get(p.target.name, TargetObservation(None))
        n = counts(seen.workload) if seen.nodes is None else node_counts(seen)
        if seen.pending:
            n = replace(n, current=False)
        nodes = _nodes(seen.pods)
        targets.append(
            {
                "name": p.target.name,
                "accelerator": p.accelerator,
                "requestedAccelerator": p.target.accelerator,
                "precision": seen.precision or p.precision,
                "placement": p.target.placement,
                "workload": workload_name(model, p.target.name),
                "image": running_image(seen.workload) or "",
                "desired": n.desired,
                "ready": n.ready,
                "updated": n.updated,
                "nodes": nodes[:MAX_NODES_LISTED],
                "nodeCount": len(nodes),
                "service": seen.service,
                "endpoints": seen.endpoints,
                "unavailable": len(p.unavailable),
                "failed": n.failed,
                "outdated": n.outdated,
                "noImage": len(p.no_image),
            }
        )
        if not _target_ready(n, p):
            pending = "" if n.current else " (update not yet picked up)"
            moved = n.updated + n.failed
            updating = f"{moved}/{n.desired} updated, " if moved < n.desired else ""
            not_ready.append(f"{p.target.name} {updating}{n.ready}/{n.desired} ready{pending}")
            if p.has_nodes:
                rolling.append(not_ready[-1])
        stuck, why = unschedulable(seen.pods)
        if stuck:
            blocked.append(f"target {p.target.name}: {stuck} pod(s) cannot be scheduled: {why}")

    missing = [p.message for p in placements if not p.has_nodes]
    fell_back = [p.message for p in placements if p.fell_back]
    down = [f"target {p.target.name}: node(s) unavailable: {unavailable_text(p)}"
            for p in placements if p.has_nodes and p.unavailable]  # fmt: skip
    no_image = [f"target {p.target.name}: {no_image_text(p)}"
                for p in placements if p.has_nodes and p.no_image]  # fmt: skip
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])

    def put(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = c.set_condition(conds, type_, ok, reason, message, generation, now)

    total = len(placements)
    ready_count = total - len(not_ready)
    if missing:
        all_down = all(p.unavailable for p in placements if not p.has_nodes)
        all_arch = all(p.no_image for p in placements if not p.has_nodes)
        reason = (
            c.NODES_UNAVAILABLE if all_down
            else c.NO_IMAGE_FOR_ARCHITECTURE if all_arch else c.NO_MATCHING_NODES
        )  # fmt: skip
        put(c.DEGRADED, True, reason, "; ".join(missing + down))
        put(c.READY, False, reason, "; ".join(missing))
    elif blocked:
        put(c.DEGRADED, True, c.UNSCHEDULABLE, "; ".join(blocked))
        put(c.READY, False, c.UNSCHEDULABLE, "; ".join(blocked))
    else:
        if down:
            put(c.DEGRADED, True, c.NODES_UNAVAILABLE, "; ".join(down + no_image + fell_back))
        elif no_image:
            put(c.DEGRADED, True, c.NO_IMAGE_FOR_ARCHITECTURE, "; ".join(no_image + fell_back))
        elif fell_back:
            put(c.DEGRADED, True, c.FELL_BACK, "; ".join(fell_back))
        else:
            put(c.DEGRADED, False, c.AS_EXPECTED, "Every target runs on its own accelerator")
        if not_ready:
            put(c.READY, False, c.TARGETS_NOT_READY, "Waiting for " + ", ".join(not_ready))
        else:
            put(c.READY, True, c.ALL_TARGETS_READY, f"All {total} targets are ready")
    if rolling:
        put(c.PROGRESSING, True, c.ROLLING_OUT, f"Rolling out {revision}: " + ", ".join(rolling))
    else:
        put(c.PROGRESSING, False, c.ROLLED_OUT, f"Revision {revision} is rolled out")

    if missing or blocked:
        phase = "Degraded"
    elif not_ready:
        phase = "Progressing"
    else:
        phase = "Ready"
    return {
        "observedGeneration": generation,
        "phase": phase,
        "revision": revision,
        "targetsReady": f"{ready_count}/{total}",
        "targets": targets,
        "conditions": conds,
    }


def invalid_status(
    previous: Mapping[str, Any], generation: int, message: str, now: datetime
) -> dict[str, Any]:
    """The spec cannot be acted on: say so and leave what runs untouched."""
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    for type_, ok in ((c.READY, False), (c.PROGRESSING, False), (c.DEGRADED, True)):
        conds = c.set_condition(conds, type_, ok, c.INVALID_SPEC, message, generation, now)
    return {**previous, "observedGeneration": generation, "phase": "Failed", "conditions": conds}


def _reason_status(status: Mapping[str, Any], type_: str) -> tuple[str, str, str]:
    cond = c.get_condition(status.get("conditions") or [], type_) or {}
    return (
        str(cond.get("status", "Unknown")),
        str(cond.get("reason", "")),
        str(cond.get("message", "")),
    )


def events_for(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[EventSpec]:
    """Events for the transitions between two statuses: nothing when nothing changed."""
    events: list[EventSpec] = []
    was, was_reason, _ = _reason_status(previous, c.DEGRADED)
    now, reason, message = _reason_status(status, c.DEGRADED)
    # NodesHeldBack has an Event of its own each time nodes are held (annotate_rollout).
    if now == "True" and (was != "True" or was_reason != reason) and reason != c.NODES_HELD_BACK:
        kind = "Normal" if reason == c.FELL_BACK else "Warning"
        events.append(EventSpec(kind, reason, message))
    elif now == "False" and was == "True":
        events.append(EventSpec("Normal", "Recovered", f"No longer degraded ({was_reason})"))
    was_ready, _, _ = _reason_status(previous, c.READY)
    ready, ready_reason, ready_message = _reason_status(status, c.READY)
    if ready == "True" and was_ready != "True":
        events.append(EventSpec("Normal", "Ready", ready_message))
    elif ready == "False" and was_ready == "True" and ready_reason == c.TARGETS_NOT_READY:
        events.append(EventSpec("Warning", "NotReady", ready_message))
    return events


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning old into new: changed keys, and None for removed ones
    (lists are replaced whole, as merge patches do). Empty when nothing changed."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = status_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch
