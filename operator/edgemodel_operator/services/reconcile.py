"""One idempotent reconcile for an EdgeModel, used on create, update, resume and the timer.

observe (the caller hands in what kopf's indices hold) -> decide (pure reconcile/
functions) -> act (the writer port). Returns the new status and the Events to post."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.spec import parse_spec
from edgemodel_operator.config import Config
from edgemodel_operator.reconcile.drift import needs_apply, orphans
from edgemodel_operator.reconcile.observed import node_info
from edgemodel_operator.reconcile.placement import place
from edgemodel_operator.reconcile.revision import revision
from edgemodel_operator.reconcile.status import (
    EventSpec,
    TargetObservation,
    build_status,
    events_for,
    invalid_status,
)
from edgemodel_operator.reconcile.workloads import (
    Owner,
    WorkloadSettings,
    build_workload,
)

TARGET_LABEL = "edgeai.dev/target"


class Writer(Protocol):
    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str) -> None: ...


@dataclass(frozen=True)
class Observed:
    """What the cluster holds, as plain dicts: every node, and this model's children."""

    nodes: Sequence[Mapping[str, Any]]
    workloads: Sequence[Mapping[str, Any]]
    pods: Sequence[Mapping[str, Any]]


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[EventSpec] = field(default_factory=list)


def reconcile(
    body: Mapping[str, Any], observed: Observed, writer: Writer, config: Config, now: datetime
) -> Outcome:
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    previous: Mapping[str, Any] = body.get("status") or {}
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec as err:
        status = invalid_status(previous, generation, str(err), now)
        return Outcome(status, events_for(previous, status))

    nodes = [node_info(n) for n in observed.nodes]
    placements = [place(t, nodes, config.accelerators) for t in spec.targets]
    rev = revision(spec)
    owner = Owner(
        api_version=body.get("apiVersion", "edgeai.dev/v1alpha1"),
        kind=body.get("kind", "EdgeModel"),
        name=name,
        namespace=namespace,
        uid=meta["uid"],
    )
    settings = WorkloadSettings(default_image=config.server_image)
    current = {(w["kind"], w["metadata"]["name"]): w for w in observed.workloads}
    events: list[EventSpec] = []
    by_target: dict[str, TargetObservation] = {}
    desired_keys: set[tuple[str, str]] = set()
    for placement in placements:
        desired = build_workload(owner, spec, placement, settings, rev)
        key = (desired["kind"], desired["metadata"]["name"])
        desired_keys.add(key)
        live = current.get(key)
        if needs_apply(desired, live):
            verb = "Created" if live is None else "Updated"
            live = writer.apply(desired)
            events.append(EventSpec("Normal", verb, f"{verb} {key[0]} {key[1]}"))
        target = placement.target.name
        pods = [p for p in observed.pods if p["metadata"]["labels"].get(TARGET_LABEL) == target]
        by_target[target] = TargetObservation(workload=live, pods=pods)

    for stale in orphans(desired_keys, observed.workloads):
        kind, child = stale["kind"], stale["metadata"]["name"]
        writer.delete(kind, namespace, child)
        events.append(EventSpec("Normal", "Deleted", f"Deleted {kind} {child}: no target needs it"))

    status = build_status(
        model=name,
        generation=generation,
        revision=rev,
        placements=placements,
        observed=by_target,
        previous=previous,
        now=now,
    )
    return Outcome(status, events + events_for(previous, status))
