"""Rollout analysis as data: which Prometheus queries to run in this pass, and what their
answers mean for the rollout gates.

While a revision is in its stabilization window (every target Ready on it, not yet
promoted), each metric of spec.rollout.analysis is checked for each target that has Ready
pods of the revision. The queries select that revision's pods by the labels the model
server puts on its series (model, target, revision) and the namespace the scraper adds.
The service runs them through an adapter (adapters/prometheus.py) and hands the answers
back here; a value outside its thresholds fails the revision (AnalysisFailed, like the
other gates); no answer (Prometheus unreachable, a query it rejects, no data yet) is
inconclusive: the rollout holds and says why, it is never promoted on a guess."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgemodel_operator.api.conditions import timestamp
from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.names import REVISION_ANNOTATION, TARGET_LABEL
from edgemodel_operator.api.spec import AnalysisMetric, parse_spec
from edgemodel_operator.reconcile.health import TargetHealth
from edgemodel_operator.reconcile.revision import revision

PASSED, FAILED, INCONCLUSIVE = "Passed", "Failed", "Inconclusive"
SELECTOR = 'namespace="$namespace",model="$edgemodel",target="$target",revision="$revision"'
BUILT_IN = {
    # Share of the revision's inference requests answered with an error (HTTP >= 400).
    "ErrorRate": (
        f"(sum(rate(edgemodel_inference_errors_total{{{SELECTOR}}}[$window])) or vector(0))"
        f" / sum(rate(edgemodel_inference_requests_total{{{SELECTOR}}}[$window]))"
    ),
    # 99th percentile of the revision's request latency, in seconds.
    "LatencyP99": (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(edgemodel_request_duration_seconds_bucket{{{SELECTOR}}}[$window])))"
    ),
}


@dataclass(frozen=True)
class AnalysisCall:
    """One query to run now: a metric of the analysis for one target's candidate pods."""

    target: str
    metric: str
    query: str  # PromQL with the placeholders filled in
    max: float | None
    min: float | None


@dataclass(frozen=True)
class Answer:
    """What Prometheus said: a value per series (none: no data), or why it said nothing."""

    values: tuple[float, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class Verdict:
    target: str
    metric: str
    query: str
    value: float | None
    threshold: str  # "<= 0.05", ">= 2", "in [1, 5]"
    outcome: str  # Passed | Failed | Inconclusive
    detail: str  # one sentence for conditions and Events

    def to_status(self) -> dict[str, Any]:
        return {
            "target": self.target, "metric": self.metric, "query": self.query,
            "value": self.value, "threshold": self.threshold, "outcome": self.outcome,
            "message": self.detail,
        }  # fmt: skip


def fill(query: str, *, namespace: str, model: str, target: str, rev: str, window: Any) -> str:
    for key, value in (("$namespace", namespace), ("$edgemodel", model), ("$target", target),
                       ("$revision", rev), ("$window", f"{window}s")):  # fmt: skip
        query = query.replace(key, value)
    return query


def query_of(metric: AnalysisMetric) -> str:
    """The metric's PromQL, placeholders left in."""
    return metric.query if metric.query is not None else BUILT_IN[metric.type]


def _ready_targets(pods: Sequence[Mapping[str, Any]], rev: str) -> set[str]:
    found = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])  # fmt: skip
        if ready and (meta.get("annotations") or {}).get(REVISION_ANNOTATION) == rev:
            found.add(str((meta.get("labels") or {}).get(TARGET_LABEL, "")))
    return found


def analysis_calls(
    body: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> list[AnalysisCall]:
    """The queries to run in this pass: none unless the spec's revision is in its
    stabilization window (as the last status tells) and the spec asks for analysis."""
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec:
        return []
    analysis = spec.rollout.analysis
    status = body.get("status") or {}
    rollout = status.get("rollout") or {}
    rev = revision(spec)
    in_window = rollout.get("revision") == rev and bool(rollout.get("readySince"))
    if analysis is None or not in_window or status.get("stableRevision") == rev:
        return []
    meta = body["metadata"]
    ready = _ready_targets(pods, rev)
    where = {"namespace": meta["namespace"], "model": meta["name"], "rev": rev,
             "window": analysis.window_seconds}  # fmt: skip
    return [
        AnalysisCall(t.name, m.name, fill(query_of(m), target=t.name, **where), m.max, m.min)
        for t in spec.targets
        if t.name in ready
        for m in analysis.metrics
    ]


def _threshold(call: AnalysisCall) -> str:
    if call.min is not None and call.max is not None:
        return f"in [{call.min:g}, {call.max:g}]"
    return f"<= {call.max:g}" if call.max is not None else f">= {call.min:g}"


def _outside(call: AnalysisCall, value: float) -> str:
    if call.max is not None and value > call.max:
        return f"above max {call.max:g}"
    if call.min is not None and value < call.min:
        return f"below min {call.min:g}"
    return ""


def _excess(call: AnalysisCall, value: float) -> float:
    """How far a value lies beyond its thresholds (negative: inside)."""
    above = value - call.max if call.max is not None else -math.inf
    below = call.min - value if call.min is not None else -math.inf
    return max(above, below)


def verdict(call: AnalysisCall, answer: Answer) -> Verdict:
    threshold = _threshold(call)
    where = f"{call.metric} on target {call.target}"

    def made(value: float | None, outcome: str, detail: str) -> Verdict:
        return Verdict(call.target, call.metric, call.query, value, threshold, outcome, detail)

    if answer.error:
        return made(None, INCONCLUSIVE, f"{where}: {answer.error}")
    values = [v for v in answer.values if not math.isnan(v)]
    if not values:
        return made(None, INCONCLUSIVE, f"{where}: no data yet (no requests reached the "
                    f"revision's pods in the window?); query: {call.query}")  # fmt: skip
    worst = max(values, key=lambda v: _excess(call, v))  # the worst series speaks for all
    value = round(worst, 6)
    outside = _outside(call, worst)
    if outside:
        return made(value, FAILED, f"{where} = {value:g}, {outside}; query: {call.query}")
    return made(value, PASSED, f"{where} = {value:g}, within {threshold}")


def verdicts(
    calls: Sequence[AnalysisCall], answers: Sequence[Answer]
) -> dict[str, tuple[Verdict, ...]]:
    """Verdicts by target, in the order of the calls."""
    out: dict[str, list[Verdict]] = {}
    for call, answer in zip(calls, answers, strict=True):
        out.setdefault(call.target, []).append(verdict(call, answer))
    return {target: tuple(found) for target, found in out.items()}


def analysis_status(
    rev: str, found: Mapping[str, Sequence[Verdict]], now: datetime
) -> dict[str, Any]:
    """status.analysis: the last checks of a candidate revision."""
    return {
        "revision": rev,
        "evaluatedAt": timestamp(now),
        "results": [v.to_status() for target in sorted(found) for v in found[target]],
    }


def with_analysis(health: TargetHealth, found: Sequence[Verdict] | None) -> TargetHealth:
    """A target's health with its verdicts: failed checks, and the checks without an
    answer (all of them when the analysis has not run for this target yet)."""
    if not found:
        return replace(health, analysis_pending=("the analysis has not run yet",))
    return replace(
        health,
        analysis_failed=tuple(v.detail for v in found if v.outcome == FAILED),
        analysis_pending=tuple(v.detail for v in found if v.outcome == INCONCLUSIVE),
    )
