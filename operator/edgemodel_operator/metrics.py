"""The operator's Prometheus metrics, through prometheus-client, in a registry of its own.

Counters of what happened (rollbacks, Events by reason, analysis runs), the reconcile
latency, and gauges of where every EdgeModel stands after its last pass: its conditions,
pods per target, Ready pods per revision and model version (the fleet's version spread),
and its rollout in a fleet owner's numbers (nodes updated, failed, unavailable; how long).
The gauges of an EdgeModel are dropped when it is deleted (forget)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edgemodel_operator.api.names import REVISION_ANNOTATION, TARGET_LABEL

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONDITIONS = ("Ready", "Progressing", "Degraded", "RolledBack", "ImagesReady")
Key = tuple[str, str]  # namespace, EdgeModel


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._series: dict[Key, dict[Gauge, set[tuple[str, ...]]]] = {}
        self._reconcile = Histogram(
            "edgemodel_reconcile_duration_seconds", "Time one reconcile of an EdgeModel took.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._condition = Gauge(
            "edgemodel_condition",
            "1 while the EdgeModel's condition is True, else 0; reason as in its status.",
            ["namespace", "edgemodel", "condition", "reason"], registry=self.registry,
        )  # fmt: skip
        self._target_pods = Gauge(
            "edgemodel_target_pods",
            "Pods of a target as its workload counts them: desired, ready, updated.",
            ["namespace", "edgemodel", "target", "accelerator", "state"], registry=self.registry,
        )  # fmt: skip
        self._revision_pods = Gauge(
            "edgemodel_revision_pods",
            "Ready pods per revision and model version (version empty when the revision is "
            "neither the spec's nor the stable one).",
            ["namespace", "edgemodel", "revision", "version"], registry=self.registry,
        )  # fmt: skip
        self._rollout = Gauge(
            "edgemodel_rollout_units",
            "The rollout of the spec's revision in nodes (pods for a model without perNode "
            "targets): total, updated (on it and Ready), failed (held back), unavailable.",
            ["namespace", "edgemodel", "revision", "unit", "state"], registry=self.registry,
        )  # fmt: skip
        self._rollout_seconds = Gauge(
            "edgemodel_rollout_duration_seconds",
            "How long the last completed rollout took, from its start to its promotion.",
            ["namespace", "edgemodel", "revision"], registry=self.registry,
        )  # fmt: skip
        self._analysis_value = Gauge(
            "edgemodel_analysis_value",
            "Last value of a rollout analysis metric for a target's candidate revision.",
            ["namespace", "edgemodel", "target", "metric"], registry=self.registry,
        )  # fmt: skip

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
        now: dict[Gauge, dict[tuple[str, ...], float]] = {
            self._condition: {}, self._target_pods: {}, self._revision_pods: {},
            self._analysis_value: {}, self._rollout: {}, self._rollout_seconds: {},
        }  # fmt: skip
        for cond in status.get("conditions") or []:
            if cond.get("type") in CONDITIONS:
                labels: tuple[str, ...] = (*key, str(cond["type"]), str(cond.get("reason", "")))
                now[self._condition][labels] = 1.0 if cond.get("status") == "True" else 0.0
        for target in status.get("targets") or []:
            for state in ("desired", "ready", "updated"):
                labels = (*key, str(target.get("name", "")), str(target.get("accelerator", "")),
                          state)  # fmt: skip
                now[self._target_pods][labels] = float(target.get(state) or 0)
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
                labels = (*key, str(revision), versions.get(str(revision), ""))
                now[self._revision_pods][labels] = now[self._revision_pods].get(labels, 0) + 1
        rollout = status.get("rollout") or {}
        progress = rollout.get("progress") or {}
        revision = str(status.get("revision", ""))
        for state in ("total", "updated", "failed", "unavailable") if progress else ():
            labels = (*key, revision, str(progress.get("unit", "")), state)
            now[self._rollout][labels] = float(progress.get(state) or 0)
        if "durationSeconds" in progress:
            now[self._rollout_seconds][(*key, revision)] = float(progress["durationSeconds"])
        for result in (status.get("analysis") or {}).get("results") or []:
            if result.get("value") is not None:
                labels = (*key, str(result.get("target", "")), str(result.get("metric", "")))
                now[self._analysis_value][labels] = float(result["value"])
        with self._lock:
            held = self._series.setdefault(key, {})
            for gauge, values in now.items():
                for gone in held.get(gauge, set()) - set(values):
                    gauge.remove(*gone)
                for series, value in values.items():
                    gauge.labels(*series).set(value)
                held[gauge] = set(values)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the gauges of a deleted EdgeModel."""
        with self._lock:
            for gauge, labels in self._series.pop((namespace, name), {}).items():
                for one in labels:
                    gauge.remove(*one)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
