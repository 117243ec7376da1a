"""Rollout analysis: the spec, the queries due in a pass, what answers mean, the gate in
decide(), and the service with a fake Prometheus and with one that cannot be reached."""

from __future__ import annotations

import copy
import socket
from collections.abc import Sequence
from typing import Any

import pytest
from fixtures import FLEET, edgemodel
from test_rollout_decide import POLICY, ROLLING, at, image, observe, stamp
from test_service import CONFIG, RecordingWriter, cond

from edgemodel_operator.adapters.prometheus import Prometheus
from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.spec import parse_spec
from edgemodel_operator.reconcile.analysis import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    AnalysisCall,
    Answer,
    analysis_calls,
    verdict,
)
from edgemodel_operator.reconcile.health import TargetHealth
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.rollout import Action, decide
from edgemodel_operator.services.reconcile import Ports, reconcile

ANALYSIS = {
    "windowSeconds": 30,
    "metrics": [
        {"name": "errors", "type": "ErrorRate", "max": 0.05},
        {"name": "p99", "type": "LatencyP99", "max": 0.25},
        {"name": "busy", "type": "Query", "query": 'max(x{target="$target"}[$window])',
         "min": 1, "max": 8},
    ],
}  # fmt: skip


def body_with_analysis(**analysis: Any) -> dict[str, Any]:
    return edgemodel(
        targets=[{"name": "cpu", "accelerator": "cpu", "replicas": 2, "image": "server:1"}],
        rollout={"analysis": {**ANALYSIS, **analysis}},
    )


# --- the spec -----------------------------------------------------------------------------


def test_the_analysis_is_parsed_with_its_defaults() -> None:
    spec = parse_spec(body_with_analysis()["spec"])
    analysis = spec.rollout.analysis
    assert analysis is not None and analysis.window_seconds == 30
    assert [(m.name, m.type, m.min, m.max) for m in analysis.metrics] == [
        ("errors", "ErrorRate", None, 0.05),
        ("p99", "LatencyP99", None, 0.25),
        ("busy", "Query", 1.0, 8.0),
    ]
    assert parse_spec(edgemodel()["spec"]).rollout.analysis is None


@pytest.mark.parametrize(
    ("metric", "complaint"),
    [
        ({"name": "q", "type": "Query", "max": 1}, "query must be set for type Query"),
        ({"name": "e", "type": "ErrorRate", "max": 1, "query": "up"}, "only for it"),
        ({"name": "e", "type": "ErrorRate"}, "must set max, min or both"),
        ({"name": "e", "type": "ErrorRate", "max": 5}, "share from 0 to 1"),
        ({"name": "l", "type": "LatencyP99", "min": 2, "max": 1}, "min 2 is above max 1"),
        ({"name": "l", "type": "P50", "max": 1}, "must be ErrorRate, LatencyP99 or Query"),
        ({"name": "Bad_Name", "type": "LatencyP99", "max": 1}, "must be a DNS label"),
    ],
)
def test_bad_analysis_metrics_are_named(metric: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidSpec, match=complaint):
        parse_spec(body_with_analysis(metrics=[metric])["spec"])


# --- which queries run --------------------------------------------------------------------


def in_window(body: dict[str, Any], rev: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["status"] = {"rollout": {"revision": rev, "readySince": stamp(0)}}
    return body


def test_queries_run_only_in_the_stabilization_window_for_targets_with_ready_pods() -> None:
    body = body_with_analysis()
    writer = RecordingWriter()
    rev = reconcile(body, Observed(FLEET, [], []), Ports(writer), CONFIG, at(0)).status["revision"]
    pods = observe(writer, rev, True).pods
    assert analysis_calls(body, pods) == []  # not yet Ready: nothing to check
    calls = analysis_calls(in_window(body, rev), pods)
    assert [(c.target, c.metric) for c in calls] == [("cpu", "errors"), ("cpu", "p99"),
                                                      ("cpu", "busy")]  # fmt: skip
    selector = f'namespace="line-3",model="digits",target="cpu",revision="{rev}"'
    assert calls[0].query == (
        f"(sum(rate(edgemodel_inference_errors_total{{{selector}}}[30s])) or vector(0)) / "
        f"sum(rate(edgemodel_inference_requests_total{{{selector}}}[30s]))"
    )
    assert calls[1].query.startswith("histogram_quantile(0.99, sum by (le) (rate(")
    assert calls[2].query == 'max(x{target="cpu"}[30s])'
    assert analysis_calls(in_window(body, rev), observe(writer, rev, False).pods) == []
    promoted = in_window(body, rev)
    promoted["status"]["stableRevision"] = rev
    assert analysis_calls(promoted, pods) == []


# --- what answers mean --------------------------------------------------------------------

CALL = AnalysisCall("cpu", "errors", "the query", 0.05, None)
RANGE = AnalysisCall("cpu", "busy", "q", 8.0, 1.0)


@pytest.mark.parametrize(
    ("call", "answer", "outcome", "value", "said"),
    [
        (CALL, Answer((0.01,)), PASSED, 0.01, "errors on target cpu = 0.01, within <= 0.05"),
        (CALL, Answer((0.5,)), FAILED, 0.5, "= 0.5, above max 0.05; query: the query"),
        (CALL, Answer(()), INCONCLUSIVE, None, "no data yet"),
        (CALL, Answer((float("nan"),)), INCONCLUSIVE, None, "no data yet"),
        (CALL, Answer(error="Prometheus at x is unreachable"), INCONCLUSIVE, None, "unreachable"),
        (RANGE, Answer((3.0, 0.5, 7.0)), FAILED, 0.5, "below min 1"),  # the worst series
        (RANGE, Answer((3.0, 9.0)), FAILED, 9.0, "above max 8"),
        (RANGE, Answer((2.0, 8.0)), PASSED, 8.0, "within in [1, 8]"),
    ],
)
def test_verdicts(
    call: AnalysisCall, answer: Answer, outcome: str, value: float | None, said: str
) -> None:
    found = verdict(call, answer)
    assert (found.outcome, found.value) == (outcome, value)
    assert said in found.detail


# --- the gate -----------------------------------------------------------------------------


def test_a_failed_check_rolls_back_with_the_query_the_value_and_the_threshold() -> None:
    failing = TargetHealth("cpu", 2, 2, True, analysis_failed=("errors = 0.5, above max 0.05",))
    plan = decide("new", {}, ROLLING, [failing], POLICY, at(5))
    assert (plan.action, plan.reason, plan.apply_revision) == (
        Action.ROLL_BACK, "AnalysisFailed", "good",
    )  # fmt: skip
    assert plan.message == "analysis failed: cpu: errors = 0.5, above max 0.05"


def test_an_inconclusive_analysis_holds_and_never_promotes() -> None:
    unsure = TargetHealth("cpu", 2, 2, True, analysis_pending=("Prometheus is unreachable",))
    started = decide("new", {}, ROLLING, [unsure], POLICY, at(1))
    assert started.action is Action.ROLL_FORWARD and started.reason == ""  # in the window
    for t in (16, 200, 5000):  # past the window, and past the progress deadline
        held = decide("new", {}, started.state, [unsure], POLICY, at(t))
        assert (held.action, held.reason) == (Action.ROLL_FORWARD, "AnalysisInconclusive")
        assert "Prometheus is unreachable" in held.message
    sure = TargetHealth("cpu", 2, 2, True)
    assert decide("new", {}, started.state, [sure], POLICY, at(200)).action is Action.PROMOTE


# --- the service ----------------------------------------------------------------------------


class FakePrometheus:
    """Answers every query with the values given for its check (matched by a substring)."""

    url = "http://prometheus.test"

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values
        self.asked: list[str] = []

    def answers(self, queries: Sequence[str]) -> list[Answer]:
        self.asked += queries
        return [Answer(tuple(v for k, v in self.values.items() if k in q)) for q in queries]

    def collect(self, queries: dict[str, str]) -> tuple[dict[str, list[Any]], str]:
        return {}, ""


def roll(body: dict[str, Any], prometheus: Any, writer: RecordingWriter, times: Sequence[float],
         ready: bool = True) -> Any:  # fmt: skip
    """Passes at these times with the pods of the revision in status Ready; the first
    pass that rolls back, else the last."""
    result = None
    for t in times:
        rev = body.get("status", {}).get("revision", "")
        result = reconcile(body, observe(writer, rev, ready),
                           Ports(writer, queries=prometheus), CONFIG, at(t))  # fmt: skip
        body["status"] = result.status
        if result.action == "RollBack":
            break
    return result


GOOD = {"errors_total": 0.0, "request_duration": 0.02, "max(x": 3.0}


def test_a_slow_version_fails_its_analysis_and_is_rolled_back() -> None:
    body = body_with_analysis()
    writer = RecordingWriter()
    prometheus = FakePrometheus(GOOD)
    body["status"] = reconcile(body, Observed(FLEET, [], []), Ports(writer), CONFIG, at(0)).status
    promoted = roll(body, prometheus, writer, [1, 2, 20, 31])
    assert promoted.action == "Promote"  # the window lasts windowSeconds (30 s), not 6 s
    assert {r["outcome"] for r in promoted.status["analysis"]["results"]} == {"Passed"}

    slow = copy.deepcopy(body)
    slow["spec"]["targets"][0]["image"] = "server:2-slow"
    slow["metadata"]["generation"] = 2
    prometheus.values["request_duration"] = 0.8
    rolled = roll(slow, prometheus, writer, [40, 41, 42, 43])
    assert rolled.action == "RollBack" and image(writer) == "server:1"
    back = cond(rolled.status, "RolledBack")
    assert back["reason"] == "AnalysisFailed"
    assert (
        "p99 on target cpu = 0.8, above max 0.25; query: histogram_quantile(0.99" in back["message"]
    )
    event = next(e for e in rolled.events if e.reason == "RolledBack")
    assert "above max 0.25" in event.message and "histogram_quantile" in event.message
    failed = [r for r in rolled.status["analysis"]["results"] if r["outcome"] == "Failed"]
    assert [(r["metric"], r["value"], r["threshold"]) for r in failed] == [("p99", 0.8, "<= 0.25")]


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("prometheus", ["unreachable", "none"])
def test_without_an_answer_from_prometheus_the_rollout_holds_and_says_so(
    prometheus: str,
) -> None:
    body = body_with_analysis()
    writer = RecordingWriter()
    client = Prometheus(closed_port(), timeout=1) if prometheus == "unreachable" else None
    body["status"] = reconcile(body, Observed(FLEET, [], []), Ports(writer), CONFIG, at(0)).status
    held = roll(body, client, writer, [1, 2, 40, 400])
    assert held.action == "RollForward" and "stableRevision" not in held.status
    progressing = cond(held.status, "Progressing")
    assert progressing["reason"] == "AnalysisInconclusive"
    said = "is unreachable" if prometheus == "unreachable" else "no Prometheus is configured"
    assert said in progressing["message"]
    assert cond(held.status, "Degraded")["status"] == "False"
