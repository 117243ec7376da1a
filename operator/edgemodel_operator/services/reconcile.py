"""One idempotent reconcile of an EdgeModel, on create, update, resume and the timer:
probe the pods waiting for the active probe, ask the image pipeline where the images
stand, let the planner (reconcile/plan.py) decide the pass, then carry it out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from edgemodel_operator.reconcile.images import ImageJob, ImageState
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.plan import (
    Pass,
    PlanSettings,
    ServerImage,
    accelerators_of,
    image_jobs,
    plan,
)
from edgemodel_operator.reconcile.probes import probe_calls, probe_condition, with_conditions
from edgemodel_operator.services.recent import RecentWrites


class Images(Protocol):
    """The image pipeline (services.images.ImagePipeline)."""

    def state(self, job: ImageJob) -> ImageState: ...


class Prober(Protocol):
    """The active probe (adapters.oip.probe_many): pod name -> what failed, or None."""

    def __call__(
        self, pods: Mapping[str, str], port: int, model: str, timeout: float
    ) -> dict[str, str | None]: ...


class Servers(Protocol):
    """The server images by digest (adapters.server_images.ServerImageResolver)."""

    def resolve(self, reference: str) -> ServerImage | None: ...


class Writer(Protocol):
    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str) -> None: ...

    def set_pod_condition(self, namespace: str, pod: str, condition: Mapping[str, Any]) -> None: ...


PROBE_TIMEOUT_SECONDS = 2.0


def _probe(body: Mapping[str, Any], observed: Observed, prober: Prober, writer: Writer,
           now: datetime) -> Observed:  # fmt: skip
    """Probe the pods waiting at the readiness gate; write and return their answers."""
    calls = probe_calls(observed.pods)
    if not calls:
        return observed
    meta = body["metadata"]
    timeout = float(((body.get("spec") or {}).get("serving") or {}).get("probe", {})
                    .get("timeoutSeconds", PROBE_TIMEOUT_SECONDS))  # fmt: skip
    conditions = {}
    for port in sorted({call.port for call in calls}):
        pods = {call.pod: call.address for call in calls if call.port == port}
        for pod, failure in prober(pods, port, meta["name"], timeout).items():
            conditions[pod] = probe_condition(failure, now)
            writer.set_pod_condition(meta["namespace"], pod, conditions[pod])
    return replace(observed, pods=with_conditions(observed.pods, conditions))


def reconcile(
    body: Mapping[str, Any],
    observed: Observed,
    writer: Writer,
    settings: PlanSettings,
    now: datetime,
    images: Images | None = None,
    prober: Prober | None = None,
    servers: Servers | None = None,
    recent: RecentWrites | None = None,
) -> Pass:
    model = (body["metadata"]["namespace"], body["metadata"]["name"])
    if recent is not None:  # the indices may not show this operator's last writes yet
        observed = recent.overlay(model, observed)
    if prober is not None:
        observed = _probe(body, observed, prober, writer, now)
    pinned_servers = {}
    if servers is not None:
        for accelerator in accelerators_of(body):
            found = servers.resolve(settings.server_image.format(accelerator=accelerator))
            if found is not None:
                pinned_servers[accelerator] = found
    states = None
    if images is not None:
        jobs = image_jobs(body, observed, settings, pinned_servers)
        states = {key: images.state(job) for key, job in jobs.items()}
    result = plan(body, observed, settings, now, states, pinned_servers)
    namespace = body["metadata"]["namespace"]
    for obj in result.apply:
        stored = writer.apply(obj)
        if recent is not None:
            recent.applied(model, observed.child(obj["kind"], obj["metadata"]["name"]), stored)
    for kind, name in result.delete:
        writer.delete(kind, namespace, name)
        if recent is not None:
            recent.deleted(model, kind, _live(observed, kind, name))
    return result


def _live(observed: Observed, kind: str, name: str) -> Mapping[str, Any] | None:
    if kind == "Pod":
        return next((p for p in observed.pods if p["metadata"]["name"] == name), None)
    return observed.child(kind, name)
