"""One idempotent reconcile of an EdgeModel, on create, update, resume and the timer:
probe the pods waiting for the active probe, ask Prometheus the rollout analysis's
queries and the telemetry's (or sample pods' /metrics), ask the image pipeline where the
images stand, let the planner (reconcile/plan.py) decide the pass, then carry it out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from edgemodel_operator.reconcile import telemetry as tm
from edgemodel_operator.reconcile.analysis import Answer, Verdict, analysis_calls, verdicts
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


Series = tuple[dict[str, str], float]


class Queries(Protocol):
    """Prometheus's query API (adapters.prometheus.Prometheus)."""

    url: str

    def answers(self, queries: Sequence[str]) -> list[Answer]: ...

    def collect(self, queries: dict[str, str]) -> tuple[dict[str, list[Series]], str]: ...


class Sampler(Protocol):
    """Pods' own /metrics, read twice (adapters.pod_metrics.PodSampler)."""

    def rates(self, pods: Sequence[Mapping[str, Any]]) -> tuple[dict[str, tm.PodRates], float]: ...


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


NO_PROMETHEUS = "no Prometheus is configured (EDGEMODEL_PROMETHEUS_URL)"


def _analyse(body: Mapping[str, Any], observed: Observed, metrics: Queries | None
             ) -> dict[str, tuple[Verdict, ...]] | None:  # fmt: skip
    """The rollout analysis's verdicts by target, when it is due in this pass."""
    calls = analysis_calls(body, observed.pods)
    if not calls:
        return None
    if metrics is None:
        answers = [Answer(error=NO_PROMETHEUS)] * len(calls)
    else:
        answers = metrics.answers([call.query for call in calls])
    return verdicts(calls, answers)


def _telemetry(
    body: Mapping[str, Any], observed: Observed, settings: PlanSettings, now: datetime,
    metrics: Queries | None, sampler: Sampler | None,
) -> dict[str, Any] | None:  # fmt: skip
    """status.telemetry when it is due (every half window), from Prometheus, else from
    a sample of the pods; None to keep what status has."""
    window = settings.telemetry_window_seconds
    if (metrics is None and sampler is None) or not tm.due(body.get("status") or {}, now,
                                                           window / 2):  # fmt: skip
        return None
    meta = body["metadata"]
    if metrics is not None:
        found, error = metrics.collect(tm.queries(meta["namespace"], meta["name"], window))
        rates = tm.from_series(found)
        figures = tm.cohorts(rates, observed.pods, observed.nodes)
        return tm.telemetry_status("prometheus", window, figures, now, error)
    assert sampler is not None
    rates, seconds = sampler.rates(observed.pods)
    note = "" if rates else "no pod has been read twice yet"
    figures = tm.cohorts(rates, observed.pods, observed.nodes)
    return tm.telemetry_status("pods", seconds, figures, now, note)


def reconcile(
    body: Mapping[str, Any],
    observed: Observed,
    writer: Writer,
    settings: PlanSettings,
    now: datetime,
    images: Images | None = None,
    prober: Prober | None = None,
    servers: Servers | None = None,
    metrics: Queries | None = None,
    sampler: Sampler | None = None,
) -> Pass:
    if prober is not None:
        observed = _probe(body, observed, prober, writer, now)
    analysis = _analyse(body, observed, metrics)
    telemetry = _telemetry(body, observed, settings, now, metrics, sampler)
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
    result = plan(body, observed, settings, now, states, pinned_servers, analysis, telemetry)
    namespace = body["metadata"]["namespace"]
    for obj in result.apply:
        writer.apply(obj)
    for kind, name in result.delete:
        writer.delete(kind, namespace, name)
    return result
