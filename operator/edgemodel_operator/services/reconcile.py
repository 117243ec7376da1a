"""One idempotent reconcile for an EdgeModel, used on create, update, resume and the timer.

observe (the caller hands in what kopf's indices hold) -> decide (pure reconcile/
functions: which revision to run, where, as which workloads) -> act (the writer port).
Returns the new status, the Events to post and what to count in metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from edgemodel_operator.api import conditions as c
from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.spec import EdgeModelSpec, parse_spec
from edgemodel_operator.config import Config
from edgemodel_operator.reconcile.drift import needs_apply, orphans
from edgemodel_operator.reconcile.images import validation_condition, variants
from edgemodel_operator.reconcile.observed import NodeInfo, node_info
from edgemodel_operator.reconcile.placement import Placement, place
from edgemodel_operator.reconcile.revision import revision
from edgemodel_operator.reconcile.rollout import (
    Action,
    Plan,
    Policy,
    TargetHealth,
    decide,
    pod_ready,
    pod_revision,
    state_from_status,
    target_health,
)
from edgemodel_operator.reconcile.status import (
    EventSpec,
    TargetObservation,
    annotate_rollout,
    build_status,
    counts,
    events_for,
    invalid_status,
)
from edgemodel_operator.reconcile.waves import (
    node_order,
    pods_to_replace,
    unavailable_budget,
    wave_sizes,
)
from edgemodel_operator.reconcile.workloads import (
    Owner,
    WorkloadSettings,
    build_workload,
    variant_key,
    workload_name,
)
from edgemodel_operator.services.images import ImageJob, ImageState

TARGET_LABEL = "edgeai.dev/target"


class Images(Protocol):
    """The image pipeline port (services.images.ImagePipeline)."""

    def state(self, job: ImageJob) -> ImageState: ...


class Prober(Protocol):
    """The active probe port (adapters.prober.probe): what failed, or None."""

    def __call__(self, address: str, port: int, model: str, timeout: float) -> str | None: ...


PODS_PROBED_PER_TARGET = 2


def _probe(
    prober: Prober, model: str, spec: EdgeModelSpec, rev: str, pods: Sequence[Mapping[str, Any]]
) -> tuple[str, ...]:
    """Probe a few Ready pods of the new revision; their failures, with pod and node."""
    failures = []
    candidates = [
        p for p in pods
        if pod_revision(p) == rev and pod_ready(p) and (p.get("status") or {}).get("podIP")
    ]  # fmt: skip
    ready = sorted(candidates, key=lambda p: str(p["metadata"]["name"]))[:PODS_PROBED_PER_TARGET]
    for pod in ready:
        failed = prober(pod["status"]["podIP"], spec.serving.port, model,
                        spec.serving.probe.timeout_seconds)  # fmt: skip
        if failed:
            node = pod["spec"].get("nodeName", "?")
            failures.append(f"pod {pod['metadata']['name']} on {node}: {failed}")
    return tuple(failures)


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
    action: str = ""  # the rollout decision, for metrics (e.g. "RollBack")


def _policy(spec: EdgeModelSpec) -> Policy:
    probe = spec.serving.probe
    return Policy(
        progress_deadline_seconds=spec.rollout.progress_deadline_seconds,
        stabilization_seconds=probe.period_seconds * probe.failure_threshold,
        auto_rollback=spec.rollout.auto_rollback,
        failure_threshold=probe.failure_threshold,
    )


def _pods_of(observed: Observed, target: str) -> list[Mapping[str, Any]]:
    return [p for p in observed.pods if p["metadata"]["labels"].get(TARGET_LABEL) == target]


def _in_waves(spec: EdgeModelSpec, placement: Placement) -> bool:
    return bool(spec.rollout.waves) and placement.target.placement == "perNode"


def _wave_order(spec: EdgeModelSpec, placement: Placement, nodes: Sequence[NodeInfo]) -> list[str]:
    labels = {n.name: n.labels for n in nodes}
    return node_order(placement.nodes, labels, spec.rollout.canary_selector)


def _health(
    model: str, rev: str, spec: EdgeModelSpec, placements: Sequence[Placement],
    observed: Observed, nodes: Sequence[NodeInfo], wave: int, was_ready: bool,
    failure_threshold: int, prober: Prober | None = None,
) -> list[TargetHealth]:  # fmt: skip
    """How the pods of revision `rev` are doing, target by target (in waves: how the pods
    due in the current wave are)."""
    live = {w["metadata"]["name"]: w for w in observed.workloads}
    health = []
    for p in placements:
        if not p.has_nodes:
            continue  # a placement problem (NoMatchingNodes), not a failing revision
        workload = live.get(workload_name(model, p.target.name))
        n = counts(workload)
        template = ((workload or {}).get("spec") or {}).get("template") or {}
        on_rev = pod_revision(template)  # the template carries the pods' annotations
        health_now = target_health(
            name=p.target.name,
            revision=rev,
            desired=n.desired if workload else max(p.target.replicas, 1),
            settled=n.current and on_rev == rev,
            pods=_pods_of(observed, p.target.name),
            was_ready=was_ready,
            failure_threshold=failure_threshold,
        )
        if _in_waves(spec, p):
            sizes = wave_sizes(spec.rollout.waves, len(p.nodes))
            expected = sizes[min(wave, len(sizes) - 1)]
            health_now = replace(health_now, expected=expected)
        if prober is not None:
            failed = _probe(prober, model, spec, rev, _pods_of(observed, p.target.name))
            health_now = replace(health_now, probe_failed=failed)
        health.append(health_now)
    return health


def _move_pods(
    spec: EdgeModelSpec, placement: Placement, nodes: Sequence[NodeInfo], plan: Plan,
    revision: str, pods: Sequence[Mapping[str, Any]],
) -> list[str]:  # fmt: skip
    """Pods of a waved target to delete now so that the DaemonSet recreates them on
    `revision`: the current wave's nodes while rolling forward, every node otherwise."""
    if plan.action is Action.HOLD:
        return []  # nothing better to go to: leave the fleet as it is
    order = _wave_order(spec, placement, nodes)
    total = len(order)
    if plan.action is Action.ROLL_FORWARD:
        sizes = wave_sizes(spec.rollout.waves, total)
        upto = sizes[min(plan.state.wave, len(sizes) - 1)]
        budget = unavailable_budget(spec.rollout.max_unavailable, total)
    else:  # promote, steady, roll back, hold stable: converge every node at once
        upto, budget = total, total
    return pods_to_replace(order, upto, pods, revision, budget)


def _image_states(
    spec: EdgeModelSpec, placements: Sequence[Placement], images: Images, namespace: str, name: str
) -> dict[str, ImageState]:
    validation = spec.model.validation
    return {
        variant_key(v.accelerator, v.precision): images.state(
            ImageJob(
                namespace=namespace,
                model=name,
                uri=spec.model.uri,
                sha256=spec.model.sha256,
                version=spec.model.version,
                variant=v,
                samples_uri=validation.samples_uri if validation else None,
                max_accuracy_drop=validation.max_accuracy_drop if validation else 0.01,
                validation=validation,
            )
        )
        for v in variants(placements)
    }


def _images_pending(
    previous: Mapping[str, Any], states: Mapping[str, ImageState], generation: int, now: datetime
) -> dict[str, Any]:
    """Status while images are built or failed: nothing is applied, what runs keeps running."""
    failed = {k: s for k, s in states.items() if s.state == "Failed"}
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    if failed:
        key, first = sorted(failed.items())[0]
        message = f"Image {key}: {first.message}"
        conds = c.set_condition(
            conds, c.IMAGES_READY, False, first.reason, message, generation, now
        )
        conds = c.set_condition(conds, c.DEGRADED, True, first.reason, message, generation, now)
        phase = "Failed" if first.terminal else "Building"
    else:
        building = "; ".join(f"{k}: {s.message}" for k, s in sorted(states.items())
                             if s.state == "Building")  # fmt: skip
        conds = c.set_condition(conds, c.IMAGES_READY, False, c.BUILDING, building, generation, now)
        phase = "Building"
    return {**previous, "observedGeneration": generation, "phase": phase, "conditions": conds}


def reconcile(
    body: Mapping[str, Any],
    observed: Observed,
    writer: Writer,
    config: Config,
    now: datetime,
    images: Images | None = None,
    prober: Prober | None = None,
) -> Outcome:
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    previous: Mapping[str, Any] = body.get("status") or {}
    raw_spec: Mapping[str, Any] = body.get("spec") or {}
    try:
        spec = parse_spec(raw_spec)
    except InvalidSpec as err:
        status = invalid_status(previous, generation, str(err), now)
        return Outcome(status, events_for(previous, status))

    nodes = [node_info(n) for n in observed.nodes]
    rev = revision(spec)
    candidate = _place(spec, nodes, config)
    pinned: dict[str, str] = {}
    sizes: dict[str, int] = {}
    models: dict[str, dict[str, Any] | None] = {}
    if images is not None:
        states = _image_states(spec, candidate, images, namespace, name)
        if any(s.state != "Ready" for s in states.values()):
            status = _images_pending(previous, states, generation, now)
            return Outcome(status, events_for(previous, status))
        pinned = {k: s.reference for k, s in states.items()}
        sizes = {k: s.size_bytes for k, s in states.items()}
        models = {k: s.model for k, s in states.items()}
    state = state_from_status(previous)
    policy = _policy(spec)
    was_ready = state.revision == rev and state.ready_since is not None
    wave = state.wave if state.revision == rev else 0
    rolling_out = rev != state.stable_revision and state.failure(rev) is None
    health = _health(name, rev, spec, candidate, observed, nodes, wave, was_ready,
                     policy.failure_threshold, prober if rolling_out else None)  # fmt: skip
    plan = decide(rev, raw_spec, state, health, policy, now)

    run_spec, run_rev, run_pinned = spec, rev, pinned
    stable_images: dict[str, str] = dict((previous.get("stable") or {}).get("images") or {})
    if plan.apply_revision != rev and plan.state.stable_spec:
        try:
            run_spec = parse_spec(plan.state.stable_spec)
            run_rev = revision(run_spec)
            run_pinned = stable_images
        except InvalidSpec:  # a stable spec this version cannot read: keep the spec's
            pass
    placements = _place(run_spec, nodes, config)

    owner = Owner(
        api_version=body.get("apiVersion", "edgeai.dev/v1alpha1"),
        kind=body.get("kind", "EdgeModel"),
        name=name,
        namespace=namespace,
        uid=meta["uid"],
    )
    settings = WorkloadSettings(default_image=config.server_image, pinned=run_pinned)
    current = {(w["kind"], w["metadata"]["name"]): w for w in observed.workloads}
    events: list[EventSpec] = []
    by_target: dict[str, TargetObservation] = {}
    desired_keys: set[tuple[str, str]] = set()
    for placement in placements:
        desired = build_workload(owner, run_spec, placement, settings, run_rev)
        key = (desired["kind"], desired["metadata"]["name"])
        desired_keys.add(key)
        live = current.get(key)
        if needs_apply(desired, live):
            verb = "Created" if live is None else "Updated"
            live = writer.apply(desired)
            events.append(EventSpec("Normal", verb, f"{verb} {key[0]} {key[1]}"))
        target = placement.target.name
        by_target[target] = TargetObservation(workload=live, pods=_pods_of(observed, target))
        if _in_waves(run_spec, placement):
            moving = _move_pods(run_spec, placement, nodes, plan, run_rev,
                                _pods_of(observed, target))  # fmt: skip
            for pod in moving:
                writer.delete("Pod", namespace, pod)
            if moving:
                events.append(EventSpec("Normal", "ReplacedPods", f"Replaced {len(moving)} "
                                        f"pod(s) of target {target} to run revision {run_rev} "
                                        f"(wave {plan.state.wave + 1})"))  # fmt: skip

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
    events += annotate_rollout(status, plan, rev, generation, now)
    if images is not None:
        built = ", ".join(f"{k} {ref}" for k, ref in sorted(pinned.items())) or "none needed"
        status["conditions"] = c.set_condition(
            status["conditions"], c.IMAGES_READY, True, c.IMAGES_BUILT,
            f"Images ready: {built}", generation, now,
        )  # fmt: skip
        status["images"] = [
            {"variant": k, "image": ref, "sizeBytes": sizes[k],
             **({"model": models[k]} if models.get(k) else {})}
            for k, ref in sorted(pinned.items())
        ]  # fmt: skip
        validated = validation_condition(spec.model.validation is not None,
                                         spec.model.validation.samples_uri
                                         if spec.model.validation else None, models)  # fmt: skip
        if validated is not None:
            status["conditions"] = c.set_condition(status["conditions"], c.VALIDATED, *validated,
                                                   generation, now)  # fmt: skip
        if "stable" in status:  # the stable revision's images, to roll back to without builds
            promoted = plan.action in (Action.PROMOTE, Action.STEADY)
            status["stable"]["images"] = pinned if promoted else stable_images
    return Outcome(status, events + events_for(previous, status), plan.action.value)


def _place(spec: EdgeModelSpec, nodes: Sequence[NodeInfo], config: Config) -> list[Placement]:
    return [place(t, nodes, config.accelerators) for t in spec.targets]
