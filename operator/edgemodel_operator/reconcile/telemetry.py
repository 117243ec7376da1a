"""How a model performs on each kind of hardware, as data for status.telemetry.

Figures are per target and hardware cohort: the accelerator a pod runs on, its node's
architecture and its node's model (node.kubernetes.io/instance-type). They are built from
per-pod rates (requests and errors per second, and the request-latency histogram's bucket
rates), which the service gets either from Prometheus (rates over the window) or by
sampling a bounded number of pods' /metrics twice (rates over the time between two
samples). Quantiles are read from the summed buckets of a cohort the way PromQL's
histogram_quantile does, so both sources agree."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgemodel_operator.api.conditions import parse_timestamp, timestamp
from edgemodel_operator.api.names import ACCELERATOR_LABEL, TARGET_LABEL

ARCH_LABEL = "kubernetes.io/arch"
MODEL_LABEL = "node.kubernetes.io/instance-type"
SELECTOR = 'namespace="{namespace}",model="{model}"'
# Per-pod rates over the window, from Prometheus.
QUERIES = {
    "requests": "sum by (pod) (rate(edgemodel_inference_requests_total{{{sel}}}[{w}s]))",
    "errors": "sum by (pod) (rate(edgemodel_inference_errors_total{{{sel}}}[{w}s]))",
    "buckets": "sum by (pod, le) (rate(edgemodel_request_duration_seconds_bucket{{{sel}}}[{w}s]))",
}


@dataclass
class PodRates:
    """Per second, over the window: requests answered, errors among them, and the request
    latency histogram's cumulative buckets (upper bound in seconds -> rate)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)


def queries(namespace: str, model: str, window: int) -> dict[str, str]:
    sel = SELECTOR.format(namespace=namespace, model=model)
    return {key: q.format(sel=sel, w=window) for key, q in QUERIES.items()}


def from_series(
    found: Mapping[str, Sequence[tuple[Mapping[str, str], float]]],
) -> dict[str, PodRates]:
    """Per-pod rates from the answers to queries() (key -> [(labels, value)])."""
    rates: dict[str, PodRates] = {}
    for key in ("requests", "errors", "buckets"):
        for labels, value in found.get(key, ()):
            pod = labels.get("pod")
            if not pod or math.isnan(value):
                continue
            into = rates.setdefault(pod, PodRates())
            if key == "requests":
                into.requests += value
            elif key == "errors":
                into.errors += value
            else:
                bound = float(labels.get("le", "nan"))
                if not math.isnan(bound):
                    into.buckets[bound] = into.buckets.get(bound, 0.0) + value
    return rates


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL's histogram_quantile over cumulative bucket rates; None without requests."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    below, lower = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:  # beyond the last finite bucket: its bound is the answer
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        below, lower = count, bound
    return lower


def _cohort(pod: Mapping[str, Any], nodes: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    node = nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""), {})
    return (
        str(labels.get(TARGET_LABEL, "")),
        str(labels.get(ACCELERATOR_LABEL, "")),
        node.get(ARCH_LABEL, ""),
        node.get(MODEL_LABEL, ""),
    )


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def cohorts(
    rates: Mapping[str, PodRates],
    pods: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """status.telemetry.cohorts: figures per target and hardware cohort, for the pods
    that have rates."""
    node_labels = {
        str((n.get("metadata") or {}).get("name", "")): (n.get("metadata") or {}).get("labels")
        or {}
        for n in nodes
    }
    grouped: dict[tuple[str, ...], list[PodRates]] = {}
    for pod in pods:
        found = rates.get(str(pod["metadata"]["name"]))
        if found is not None:
            grouped.setdefault(_cohort(pod, node_labels), []).append(found)
    out = []
    for (target, accelerator, arch, model), members in sorted(grouped.items()):
        requests = sum(m.requests for m in members)
        errors = sum(m.errors for m in members)
        buckets: dict[float, float] = {}
        for m in members:
            for bound, value in m.buckets.items():
                buckets[bound] = buckets.get(bound, 0.0) + value
        out.append({
            "target": target, "accelerator": accelerator, "architecture": arch,
            "nodeModel": model, "pods": len(members),
            "requestsPerSecond": _round(requests, 3),
            "errorRate": _round(errors / requests if requests > 0 else None, 4),
            "latencyP50Seconds": _round(quantile(0.5, buckets)),
            "latencyP99Seconds": _round(quantile(0.99, buckets)),
        })  # fmt: skip
    return out


def due(previous: Mapping[str, Any], now: datetime, every: float) -> bool:
    """Whether the figures in status are older than `every` seconds (or missing)."""
    seen = str((previous.get("telemetry") or {}).get("observedAt") or "")
    if not seen:
        return True
    then = parse_timestamp(seen).replace(tzinfo=now.tzinfo)
    return (now - then).total_seconds() >= every


def telemetry_status(
    source: str, window: float, found: list[dict[str, Any]], now: datetime, note: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": source, "windowSeconds": round(window, 1), "observedAt": timestamp(now),
        "cohorts": found,
    }  # fmt: skip
    if note:
        out["message"] = note
    return out
