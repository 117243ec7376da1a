"""One reconcile pass as data: from the EdgeModel and what the cluster holds, everything the
pass should do: the children to apply and delete, the pods to move, the status to write,
the Events to post and the rollout decision to count. Pure: the service executes it.

The steps: parse the spec (an invalid one only gets a status); place each target; when
the operator builds images, wait for them (nothing is touched meanwhile); decide the
rollout (reconcile/rollout.py); render the children of the revision to run (the spec's,
or the stable one when rolling back), with the pods a paced target moves now
(reconcile/waves.py) and the nodes held back on the stable revision
(reconcile/holdback.py); note what drifted; build the status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from edgemodel_operator.api.accelerators import AcceleratorProfile
from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.names import API_VERSION
from edgemodel_operator.api.spec import EdgeModelSpec, check_name, parse_spec
from edgemodel_operator.reconcile.analysis import Verdict, analysis_status, with_analysis
from edgemodel_operator.reconcile.drift import needs_apply
from edgemodel_operator.reconcile.health import TargetHealth, pod_revision, target_health
from edgemodel_operator.reconcile.holdback import held_back, held_nodes, held_workloads
from edgemodel_operator.reconcile.images import (
    ImageJob,
    ImageState,
    add_image_status,
    pending_status,
    variants,
)
from edgemodel_operator.reconcile.network import (
    ProbeSource,
    build_network_policy,
    build_service,
    ready_endpoints,
    service_name,
)
from edgemodel_operator.reconcile.observed import Observed, node_info
from edgemodel_operator.reconcile.placement import (
    Placement,
    per_node,
    place_targets,
    unavailable_text,
    variant_key,
    workload_kind,
)
from edgemodel_operator.reconcile.revision import revision
from edgemodel_operator.reconcile.rollout import Action, Policy, decide, next_check
from edgemodel_operator.reconcile.rollout_state import RolloutState, state_from_status
from edgemodel_operator.reconcile.rollout_status import (
    annotate_rollout,
    catch_up_events,
    rollout_progress,
)
from edgemodel_operator.reconcile.signatures import model_unverifiable, signature_events
from edgemodel_operator.reconcile.status import (
    EventSpec,
    TargetObservation,
    build_status,
    counts,
    events_for,
    invalid_status,
)
from edgemodel_operator.reconcile.waves import paced, pods_to_move, wave_sizes
from edgemodel_operator.reconcile.workloads import (
    ORIGINAL,
    Nodes,
    Owner,
    WorkloadSettings,
    build_workload,
    image_for,
    workload_name,
)


@dataclass(frozen=True)
class PlanSettings:
    """What the operator's configuration means for every pass."""

    accelerators: Mapping[str, AcceleratorProfile]
    server_image: str  # the model server without a model; "{accelerator}" is filled in
    probe_gate: bool = False  # pods wait for the active probe before taking traffic
    network_policy: bool = False  # one NetworkPolicy per EdgeModel admits only its clients
    probe_source: ProbeSource | None = None  # where the probe comes from (in-cluster)
    telemetry_window_seconds: int = 60  # status.telemetry's figures cover this window


class ServerImage(Protocol):
    """A server image resolved to its index digest, with the architectures it serves."""

    @property
    def reference(self) -> str: ...

    @property
    def archs(self) -> tuple[str, ...]: ...


def accelerators_of(body: Mapping[str, Any]) -> list[str]:
    """The accelerators the spec may run on (its targets' and their fallbacks')."""
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec:
        return []
    named = {t.accelerator for t in spec.targets} | {t.fallback for t in spec.targets if t.fallback}
    return sorted(named)


@dataclass
class Pass:
    status: dict[str, Any]
    events: list[EventSpec] = field(default_factory=list)
    action: str = ""  # the rollout decision, for metrics (e.g. "RollBack")
    apply: list[dict[str, Any]] = field(default_factory=list)  # children to server-side apply
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name), pods included
    recheck_seconds: float | None = None  # a deadline or window ends then: look again
    # A rollback's evidence comes from pods on these nodes (rollout.Plan.evidence_nodes)
    evidence_nodes: frozenset[str] | None = None
    one_node_fails: bool = False  # rollout.Plan.one_node_fails


def _policy(spec: EdgeModelSpec) -> Policy:
    probe = spec.serving.probe
    window = probe.period_seconds * probe.failure_threshold
    if spec.rollout.analysis is not None:  # the analysis needs its whole window of traffic
        window = max(window, spec.rollout.analysis.window_seconds)
    return Policy(
        progress_deadline_seconds=spec.rollout.progress_deadline_seconds,
        stabilization_seconds=window,
        auto_rollback=spec.rollout.auto_rollback,
        failure_threshold=probe.failure_threshold,
        success_threshold=spec.rollout.success_threshold,
    )


def image_jobs(
    body: Mapping[str, Any], observed: Observed, settings: PlanSettings,
    servers: Mapping[str, ServerImage] | None = None,
) -> dict[str, ImageJob]:  # fmt: skip
    """The images the spec's targets need ("accelerator/precision" -> job); none for a spec
    that cannot be parsed or targets that bring their own image."""
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec:
        return {}
    meta = body["metadata"]
    nodes = [node_info(n) for n in observed.nodes]
    validation = spec.model.validation
    return {
        variant_key(v.accelerator, v.precision): ImageJob(
            namespace=meta["namespace"],
            model=meta["name"],
            uri=spec.model.uri,
            sha256=spec.model.sha256,
            version=spec.model.version,
            variant=v,
            samples_uri=validation.samples_uri if validation else None,
            max_accuracy_drop=validation.max_accuracy_drop if validation else 0.01,
            validation=validation,
            signature=spec.model.signature,
        )
        for v in variants(
            place_targets(spec, nodes, settings.accelerators, None, _server_archs(servers))
        )
    }


def _server_archs(servers: Mapping[str, ServerImage] | None) -> dict[str, list[str]]:
    return {acc: list(s.archs) for acc, s in (servers or {}).items() if s.archs}


def _health(
    model: str, rev: str, spec: EdgeModelSpec, placements: Sequence[Placement],
    observed: Observed, state: RolloutState, failure_threshold: int,
    analysis: Mapping[str, Sequence[Verdict]] | None = None,
) -> list[TargetHealth]:  # fmt: skip
    """How the pods of revision `rev` are doing, target by target (in waves: how the pods
    due in the current wave are). A per-node target counts its available nodes only."""
    wave = state.wave if state.revision == rev else 0
    ready_since = state.ready_since if state.revision == rev else None
    health = []
    for p in placements:
        if not p.has_nodes and p.unavailable:  # an outage, not a failing revision
            why = f"every node it runs on is unavailable: {unavailable_text(p)}"
            health.append(TargetHealth(p.target.name, max(p.target.replicas, 1), 0, False,
                                       blocked=why))  # fmt: skip
            continue
        if not p.has_nodes:
            continue  # a placement problem (NoMatchingNodes), not a failing revision
        workload = observed.child(workload_kind(p), workload_name(model, p.target.name))
        n = counts(workload)
        template = ((workload or {}).get("spec") or {}).get("template") or {}
        on_rev = pod_revision(template)  # the template carries the pods' annotations
        one_per_node = per_node(p)
        replicas = n.desired if workload else max(p.target.replicas, 1)
        health_now = target_health(
            name=p.target.name,
            revision=rev,
            desired=len(p.nodes) if one_per_node else replicas,
            settled=n.current and on_rev == rev,
            pods=observed.pods_of(p.target.name),
            ready_since=ready_since,
            failure_threshold=failure_threshold,
            nodes=frozenset(p.nodes) if one_per_node else None,
        )
        if paced(spec, p):
            sizes = wave_sizes(spec.rollout.waves, len(p.nodes))
            due = sizes[min(wave, len(sizes) - 1)]
            allowed = due * (100 - spec.rollout.success_threshold) // 100
            held = frozenset(held_nodes(state, p.target.name) if state.revision == rev else ())
            health_now = replace(health_now, expected=due, allowed_failures=allowed,
                                 held=held & frozenset(p.nodes))  # fmt: skip
        if spec.rollout.analysis is not None:
            health_now = with_analysis(health_now, (analysis or {}).get(p.target.name))
        health.append(health_now)
    return health


def _owner(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(
        api_version=body.get("apiVersion", API_VERSION),
        kind=body.get("kind", "EdgeModel"),
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
    )


def _writes(result: Pass, desired: Sequence[dict[str, Any]], observed: Observed,
            revision: str) -> None:  # fmt: skip
    """Into `result`: the desired children that differ from the live ones, the live ones no
    target needs any more, and one Event per kind of write naming every object (a
    1,000-model site creates 6,000 children: an Event each would double the requests)."""
    wanted = {(d["kind"], d["metadata"]["name"]) for d in desired}
    written: dict[str, list[str]] = {"Created": [], "Updated": [], "Deleted": []}
    for obj in desired:
        live = observed.child(obj["kind"], obj["metadata"]["name"])
        if needs_apply(obj, live):
            result.apply.append(obj)
            written["Created" if live is None else "Updated"].append(
                f"{obj['kind']} {obj['metadata']['name']}")  # fmt: skip
    for stale in observed.children:
        kind, child = stale["kind"], stale["metadata"]["name"]
        if (kind, child) not in wanted:
            result.delete.append((kind, child))
            written["Deleted"].append(f"{kind} {child}")
    for verb, objects in written.items():
        if objects:
            why = ": no target needs them" if verb == "Deleted" else f" for revision {revision}"
            result.events.append(EventSpec("Normal", verb, f"{verb} {', '.join(objects)}{why}"))


def plan(
    body: Mapping[str, Any],
    observed: Observed,
    settings: PlanSettings,
    now: datetime,
    images: Mapping[str, ImageState] | None = None,
    servers: Mapping[str, ServerImage] | None = None,
    analysis: Mapping[str, Sequence[Verdict]] | None = None,
    telemetry: Mapping[str, Any] | None = None,
) -> Pass:
    """The pass for this EdgeModel. `images`: the state of each image the spec needs
    (from image_jobs), or None when the operator builds no images. `servers`: the server
    image of each accelerator by digest, where it could be resolved. `analysis`: the
    rollout analysis's verdicts by target, when it ran in this pass. `telemetry`: fresh
    status.telemetry, or None to keep the last figures."""
    meta = body["metadata"]
    name, generation = meta["name"], int(meta.get("generation", 1))
    previous: Mapping[str, Any] = body.get("status") or {}
    raw_spec: Mapping[str, Any] = body.get("spec") or {}
    try:
        check_name(name)
        spec = parse_spec(raw_spec)
    except InvalidSpec as err:
        status = invalid_status(previous, generation, str(err), now)
        return Pass(status, events_for(previous, status))

    nodes = [node_info(n) for n in observed.nodes]
    rev = revision(spec)
    pinned: dict[str, str] = {}
    archs: dict[str, list[str]] = {}
    if images is None and spec.model.signature is not None:
        status = model_unverifiable(previous, generation, now)
        return Pass(status, events_for(previous, status))
    if images is not None:
        if any(s.state != "Ready" for s in images.values()):
            status = pending_status(previous, images, generation, now)
            return Pass(status, events_for(previous, status))
        pinned = {k: s.reference for k, s in images.items()}
        archs = {k: [arch for arch, _ in s.platforms] for k, s in images.items()}
    servers = servers or {}
    server_archs = _server_archs(servers)
    candidate = place_targets(spec, nodes, settings.accelerators, archs, server_archs)
    state = state_from_status(previous)
    policy = _policy(spec)
    health = _health(name, rev, spec, candidate, observed, state, policy.failure_threshold,
                     analysis)  # fmt: skip
    decision = decide(rev, raw_spec, state, health, policy, now)

    run_spec, run_rev, run_pinned, run_archs = spec, rev, pinned, archs
    stable = previous.get("stable") or {}
    stable_images: dict[str, str] = dict(stable.get("images") or {})
    stable_archs: dict[str, list[str]] = dict(stable.get("architectures") or {})
    if decision.apply_revision != rev and decision.state.stable_spec:
        try:
            run_spec = parse_spec(decision.state.stable_spec)
            run_rev = revision(run_spec)
            run_pinned, run_archs = stable_images, stable_archs
        except InvalidSpec:  # a stable spec this version cannot read: keep the spec's
            pass
    same = run_spec is spec and run_archs is archs
    placements = (
        candidate
        if same
        else place_targets(run_spec, nodes, settings.accelerators, run_archs, server_archs)
    )
    holdback = held_back(previous, decision.state, stable_images, stable_archs)

    result = Pass(status={}, action=decision.action.value,
                  recheck_seconds=next_check(decision, policy, now),
                  evidence_nodes=decision.evidence_nodes,
                  one_node_fails=decision.one_node_fails)  # fmt: skip
    owner = _owner(body)
    workload_settings = WorkloadSettings(
        default_image=settings.server_image, pinned=run_pinned, probe_gate=settings.probe_gate,
        servers={acc: s.reference for acc, s in servers.items()},
    )  # fmt: skip
    desired: list[dict[str, Any]] = []
    if holdback is not None:
        desired += held_workloads(owner, holdback, decision.state, nodes, settings.accelerators,
                                   replace(workload_settings, pinned=holdback["images"]),
                                   server_archs)  # fmt: skip
    by_target: dict[str, TargetObservation] = {}
    for placement in placements:
        skip = held_nodes(decision.state, placement.target.name) if holdback is not None else ()
        workload = build_workload(owner, run_spec, placement, workload_settings, run_rev,
                                  Nodes(skip=skip))  # fmt: skip
        service = build_service(owner, run_spec, placement)
        desired += [workload, service]
        target = placement.target.name
        pods = observed.pods_of(target)
        live = observed.child(workload["kind"], workload["metadata"]["name"])
        svc = service_name(name, target)
        _, optimized = image_for(placement, workload_settings)
        by_target[target] = TargetObservation(
            workload=live, pods=pods, service=svc,
            endpoints=ready_endpoints(pods),
            pending=needs_apply(workload, live),
            precision=placement.precision if optimized else ORIGINAL,
            nodes=frozenset(placement.nodes) if per_node(placement) else None,
            held=len(set(held_nodes(decision.state, target)) & set(placement.nodes)),
        )  # fmt: skip
        if paced(run_spec, placement):
            moving = pods_to_move(run_spec, placement, nodes, decision, run_rev, pods)
            result.delete += [("Pod", pod) for pod in moving]
            if moving:
                wave_no = decision.state.wave + 1
                named = ", ".join(sorted(moving)[:5]) + (", ..." if len(moving) > 5 else "")
                result.events.append(EventSpec("Normal", "ReplacedPods", f"Replaced "
                    f"{len(moving)} pod(s) of target {target} to run revision {run_rev} "
                    f"(wave {wave_no}): {named}"))  # fmt: skip
    if settings.network_policy:
        desired.append(build_network_policy(owner, run_spec, settings.probe_source))

    _writes(result, desired, observed, run_rev)

    status = build_status(
        model=name, generation=generation, revision=rev, placements=placements,
        observed=by_target, previous=previous, now=now,
    )  # fmt: skip
    result.events += annotate_rollout(status, decision, rev, generation, now)
    status["rollout"]["progress"] = rollout_progress(placements, by_target, rev, decision.state)
    if holdback is not None:
        status["heldBack"] = holdback
    if decision.action is Action.STEADY:
        result.events += catch_up_events(previous, status, run_rev)
    if spec.rollout.analysis is not None and analysis:
        status["analysis"] = analysis_status(rev, analysis, now)
    elif spec.rollout.analysis is not None and previous.get("analysis"):
        status["analysis"] = previous["analysis"]  # the last checks, until the next ones
    if telemetry is not None or previous.get("telemetry"):
        status["telemetry"] = dict(telemetry or previous["telemetry"])
    if images is not None:
        add_image_status(status, images, spec.model.validation, generation, now)
        result.events += signature_events(previous.get("images") or [], status["images"])
        if "stable" in status:  # the stable revision's images, to roll back to without builds
            promoted = decision.action in (Action.PROMOTE, Action.STEADY)
            status["stable"]["images"] = pinned if promoted else stable_images
            status["stable"]["architectures"] = archs if promoted else stable_archs
    result.status = status
    result.events += events_for(previous, status)
    return result
