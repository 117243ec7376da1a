"""The operator's Prometheus metrics, through prometheus-client, in a registry of its own.

Counters of what happened (rollbacks, Events by reason, analysis runs), the reconcile
latency, and gauges of where every EdgeModel stands after its last pass: its conditions,
pods per target, Ready pods per revision and model version (the fleet's version spread),
and its rollout in a fleet owner's numbers (nodes updated, failed, unavailable; how long).
The gauges of an EdgeModel are dropped when it is deleted (forget)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgemodel_operator.api.names import REVISION_ANNOTATION, TARGET_LABEL

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONDITIONS = ("Ready", "Progressing", "Degraded", "RolledBack", "ImagesReady")
# Where every EdgeModel stands after its last pass: name, help, labels after namespace and
# edgemodel.
GAUGES = {
    "edgemodel_condition": (
        "1 while the EdgeModel's condition is True, else 0; reason as in its status.",
        ("condition", "reason"),
    ),
    "edgemodel_target_pods": (
        "Pods of a target as its workload counts them: desired, ready, updated.",
        ("target", "accelerator", "state"),
    ),
    "edgemodel_revision_pods": (
        "Ready pods per revision and model version (version empty when the revision is "
        "neither the spec's nor the stable one).",
        ("revision", "version"),
    ),
    "edgemodel_rollout_units": (
        "The rollout of the spec's revision in nodes (pods for a model without perNode "
        "targets): total, updated (on it and Ready), failed (held back), unavailable.",
        ("revision", "unit", "state"),
    ),
    "edgemodel_rollout_duration_seconds": (
        "How long the last completed rollout took, from its start to its promotion.",
        ("revision",),
    ),
    "edgemodel_analysis_value": (
        "Last value of a rollout analysis metric for a target's candidate revision.",
        ("target", "metric"),
    ),
}
Key = tuple[str, str]  # namespace, EdgeModel
Series = dict[tuple[str, ...], float]  # a gauge's labels after namespace and edgemodel: value


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._reconcile = Histogram(
            "edgemodel_reconcile_duration_seconds", "Time one reconcile of an EdgeModel took.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._gauges = StatusGauges()
        self.registry.register(self._gauges)

        # Declared up front, so that rules and dashboards find them before the first one.
        for name, help_, labels in (
            ("edgemodel_rollbacks_total", "Automatic rollbacks to the stable revision.",
             ("edgemodel", "namespace")),
            ("edgemodel_events_total", "Events posted about EdgeModels, by type and reason.",
             ("reason", "type")),
        ):  # fmt: skip
            self._counters[name] = Counter(name.removesuffix("_total"), help_, labels,
                                           registry=self.registry)  # fmt: skip

    def count(self, name: str, help_: str, value: float = 1.0, **labels: str) -> None:
        """Add to the counter `name` (ending in _total), created on first use."""
        with self._lock:
            counter = self._counters.get(name)
            if counter is None:
                counter = Counter(name.removesuffix("_total"), help_, sorted(labels),
                                  registry=self.registry)  # fmt: skip
                self._counters[name] = counter
        counter.labels(**labels).inc(value)

    def observe_reconcile(self, seconds: float) -> None:
        self._reconcile.observe(seconds)

    def observe_status(
        self,
        body: Mapping[str, Any],
        status: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """The gauges of one EdgeModel after a pass, from the status it wrote."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        conditions: Series = {}
        targets: Series = {}
        spread: Series = {}
        units: Series = {}
        durations: Series = {}
        analysis: Series = {}
        for cond in status.get("conditions") or []:
            if cond.get("type") in CONDITIONS:
                labels: tuple[str, ...] = (str(cond["type"]), str(cond.get("reason", "")))
                conditions[labels] = 1.0 if cond.get("status") == "True" else 0.0
        for target in status.get("targets") or []:
            for state in ("desired", "ready", "updated"):
                labels = (str(target.get("name", "")), str(target.get("accelerator", "")),
                          state)  # fmt: skip
                targets[labels] = float(target.get(state) or 0)
        versions = _versions(body, status)
        for pod in pods:
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])  # fmt: skip
            revision = ((pod.get("metadata") or {}).get("annotations") or {}).get(
                REVISION_ANNOTATION
            )
            if (
                ready
                and revision
                and (pod.get("metadata") or {}).get("labels", {}).get(TARGET_LABEL)
            ):
                labels = (str(revision), versions.get(str(revision), ""))
                spread[labels] = spread.get(labels, 0) + 1
        rollout = status.get("rollout") or {}
        progress = rollout.get("progress") or {}
        revision = str(status.get("revision", ""))
        for state in ("total", "updated", "failed", "unavailable") if progress else ():
            labels = (revision, str(progress.get("unit", "")), state)
            units[labels] = float(progress.get(state) or 0)
        if "durationSeconds" in progress:
            durations[(revision,)] = float(progress["durationSeconds"])
        for result in (status.get("analysis") or {}).get("results") or []:
            if result.get("value") is not None:
                labels = (str(result.get("target", "")), str(result.get("metric", "")))
                analysis[labels] = float(result["value"])
        gauges = {
            "edgemodel_condition": conditions, "edgemodel_target_pods": targets,
            "edgemodel_revision_pods": spread, "edgemodel_rollout_units": units,
            "edgemodel_rollout_duration_seconds": durations, "edgemodel_analysis_value": analysis,
        }  # fmt: skip
        self._gauges.set(key, {name: series for name, series in gauges.items() if series})

    def forget(self, namespace: str, name: str) -> None:
        """Drop the gauges of a deleted EdgeModel."""
        self._gauges.set((namespace, name), None)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StatusGauges(Collector):
    """The gauges of every EdgeModel, kept as plain values and made into metric families
    when scraped. prometheus-client's labelled gauges keep an object and a lock per series:
    with about twenty series per EdgeModel, a thousand models held ~13 MiB in them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[Key, dict[str, Series]] = {}

    def set(self, key: Key, gauges: dict[str, Series] | None) -> None:
        """One model's series by gauge name (None: it has none, it was deleted)."""
        with self._lock:
            if gauges is None:
                self._models.pop(key, None)
            else:
                self._models[key] = gauges  # replaced whole, never changed in place

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            models = list(self._models.items())
        for name, (help_, labels) in GAUGES.items():
            family = GaugeMetricFamily(name, help_, labels=["namespace", "edgemodel", *labels])
            for key, gauges in models:
                for series, value in gauges.get(name, {}).items():
                    family.add_metric([*key, *series], value)
            yield family


def _versions(body: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, str]:
    """Model version of the spec's revision and of the stable one."""
    found: dict[str, str] = {}
    stable = status.get("stable") or {}
    stable_version = (((stable.get("spec") or {}).get("model")) or {}).get("version")
    if stable.get("revision") and stable_version:
        found[str(stable["revision"])] = str(stable_version)
    version = (((body.get("spec") or {}).get("model")) or {}).get("version")
    if status.get("revision") and version:
        found[str(status["revision"])] = str(version)
    return found
