"""One idempotent reconcile of an EdgeModel: gather what the planner cannot know by itself
(the active probe's answers, the rollout analysis's and the telemetry's figures from
Prometheus or the pods, the server images by digest, where the images stand), let the
planner (reconcile/plan.py) decide the pass, then carry out its writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from edgemodel_operator.reconcile import telemetry as tm
from edgemodel_operator.reconcile.analysis import Answer, Verdict, analysis_calls, verdicts
from edgemodel_operator.reconcile.freshness import indices_agree
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

    def stop(self, namespace: str, model: str) -> None: ...


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


class Reader(Protocol):
    """The model's workloads (each with its "kind") and pods as the API server has them now
    (adapters.kube.KubeGateway)."""

    def model_workloads(self, namespace: str, model: str) -> list[dict[str, Any]]: ...

    def model_pods(
        self, namespace: str, model: str, nodes: frozenset[str] | None = None
    ) -> list[dict[str, Any]]: ...


class Writer(Protocol):
    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str) -> None: ...

    def set_pod_condition(self, namespace: str, pod: str, condition: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Ports:
    """The I/O a reconcile uses, built once at start-up (wiring.py): the API writer, and
    where configured the image pipeline, the active probe, the server-image resolver,
    Prometheus's query API and the pods' /metrics sampler; and the operator's own recent
    writes, which the watch-fed indices may not show yet."""

    writer: Writer
    images: Images | None = None
    prober: Prober | None = None
    servers: Servers | None = None
    queries: Queries | None = None
    sampler: Sampler | None = None
    recent: RecentWrites | None = None
    reader: Reader | None = None  # confirms a rollback against the API server


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


def _servers(
    body: Mapping[str, Any], settings: PlanSettings, servers: Servers | None
) -> dict[str, ServerImage]:
    """The server image of each accelerator the spec may use, by digest where resolved."""
    if servers is None:
        return {}
    pinned = {}
    for accelerator in accelerators_of(body):
        found = servers.resolve(settings.server_image.format(accelerator=accelerator))
        if found is not None:
            pinned[accelerator] = found
    return pinned


def reconcile(
    body: Mapping[str, Any], observed: Observed, ports: Ports, settings: PlanSettings,
    now: datetime,
) -> Pass:  # fmt: skip
    model = (body["metadata"]["namespace"], body["metadata"]["name"])
    if ports.recent is not None:  # the indices may not show this operator's last writes yet
        observed = ports.recent.overlay(model, observed)
    if ports.prober is not None:
        observed = _probe(body, observed, ports.prober, ports.writer, now)
    servers = _servers(body, settings, ports.servers)
    states = None
    if ports.images is not None:
        jobs = image_jobs(body, observed, settings, servers)
        states = {key: ports.images.state(job) for key, job in jobs.items()}
    analysis = _analyse(body, observed, ports.queries)
    telemetry = _telemetry(body, observed, settings, now, ports.queries, ports.sampler)
    result = plan(body, observed, settings, now, states, servers, analysis, telemetry)
    if result.action == "RollBack" and ports.reader is not None:
        observed, result = _confirm(
            model, observed, result, ports.reader,
            lambda seen: plan(body, seen, settings, now, states, servers, analysis, telemetry),
        )  # fmt: skip
    namespace = body["metadata"]["namespace"]
    for obj in result.apply:
        stored = ports.writer.apply(obj)
        if ports.recent is not None:
            ports.recent.applied(model, observed.child(obj["kind"], obj["metadata"]["name"]),
                                 stored)  # fmt: skip
    for kind, name in result.delete:
        ports.writer.delete(kind, namespace, name)
        if ports.recent is not None:
            ports.recent.deleted(model, kind, _live(observed, kind, name))
    return result


WORKLOADS = ("Deployment", "DaemonSet")
CONFIRM_NODES = 10  # evidence on more nodes than this: read all the model's pods
CONFIRM_ROUNDS = 2
PROOF_NODES = 3  # where one node's evidence fails the rollout: read this many of them


def _confirm(
    model: tuple[str, str], observed: Observed, result: Pass, reader: Reader,
    replan: Callable[[Observed], Pass],
) -> tuple[Observed, Pass]:  # fmt: skip
    """A rollback decided again on what the API server holds now, since the indices lag for
    as long as a watch is down (a partition, an API server restart): the model's workloads,
    and the pods on the nodes its evidence comes from (a few of them where one node's
    evidence is enough). Where the evidence names no node or many (the deadline), or moves
    to other nodes more than once, all its pods, unless the workloads' own counts agree
    with the indices. Reading a few nodes' pods, or none, not a fleet's, keeps a rollback
    prompt on 1,500 nodes."""
    workloads = reader.model_workloads(*model)
    observed = replace(observed, children=[
        *(c for c in observed.children if c["kind"] not in WORKLOADS), *workloads,
    ])  # fmt: skip
    read: frozenset[str] = frozenset()
    for round_ in range(CONFIRM_ROUNDS + 1):
        nodes = result.evidence_nodes
        if (
            read
            and nodes is not None
            and (nodes <= read or (result.one_node_fails and nodes & read))
        ):
            return observed, result  # the evidence stands on fresh pods
        if nodes is None or round_ == CONFIRM_ROUNDS:
            break
        if result.one_node_fails:
            nodes = frozenset(sorted(nodes - read)[:PROOF_NODES])
        if len(read | nodes) > CONFIRM_NODES:
            break
        fresh = reader.model_pods(*model, nodes - read)
        read |= nodes
        kept = [p for p in observed.pods if (p.get("spec") or {}).get("nodeName") not in read]
        observed = replace(observed, pods=[*kept, *fresh])
        result = replan(observed)
        if result.action != "RollBack":
            return observed, result
    if not indices_agree(workloads, observed):
        observed = replace(observed, pods=reader.model_pods(*model))
    return observed, replan(observed)


def _live(observed: Observed, kind: str, name: str) -> Mapping[str, Any] | None:
    if kind == "Pod":
        return next((p for p in observed.pods if p["metadata"]["name"] == name), None)
    return observed.child(kind, name)
