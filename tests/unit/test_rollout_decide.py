"""decide(): the rollout table, without a cluster; and the service rolling back for real
through a sequence of observations (good -> bad -> rolled back -> bad again -> good)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixtures import FLEET, edgemodel
from test_service import CONFIG, RecordingWriter, cond, pod

from edgemodel_operator.reconcile.health import Evidence, TargetHealth, target_health
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.rollout import Action, Policy, decide
from edgemodel_operator.reconcile.rollout_state import (
    FailedRevision,
    RolloutState,
    state_from_status,
    state_to_status,
)
from edgemodel_operator.services.reconcile import Ports, reconcile

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = Policy(progress_deadline_seconds=60, stabilization_seconds=15, auto_rollback=True,
                failure_threshold=3)  # fmt: skip
SPEC = {"model": {"version": "2"}}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


HEALTHY = TargetHealth("cpu", desired=2, ready=2, settled=True)
A_ON_N1 = Evidence("n1", "pod a on n1")
WAITING = TargetHealth("cpu", desired=2, ready=1, settled=True, not_ready=(A_ON_N1,))
A_CRASHES = Evidence("n1", "pod a on n1: CrashLoopBackOff (4 restarts)")
CRASHING = TargetHealth("cpu", 2, 1, True, crashing=(A_CRASHES,))
LOST = TargetHealth("cpu", 2, 1, True, lost=(A_ON_N1,))
STABLE = RolloutState(revision="good", stable_revision="good", stable_spec={"v": 1})
ROLLING = RolloutState("new", stamp(0), None, "good", {"v": 1})
NO_STABLE = RolloutState("new", stamp(0))


@pytest.mark.parametrize(
    ("state", "health", "now", "policy", "action", "apply", "reason"),
    [
        # a new revision starts rolling forward, its clock starting now
        (STABLE, [WAITING], 0, POLICY, Action.ROLL_FORWARD, "new", ""),
        (ROLLING, [WAITING], 59, POLICY, Action.ROLL_FORWARD, "new", ""),
        # every gate: the deadline, crash loops, readiness lost
        (ROLLING, [WAITING], 61, POLICY, Action.ROLL_BACK, "good", "ProgressDeadlineExceeded"),
        (ROLLING, [CRASHING], 5, POLICY, Action.ROLL_BACK, "good", "CrashLooping"),
        (ROLLING, [LOST], 5, POLICY, Action.ROLL_BACK, "good", "ReadinessLost"),
        # healthy: wait for the stabilization window, then promote
        (ROLLING, [HEALTHY], 5, POLICY, Action.ROLL_FORWARD, "new", ""),
        (RolloutState("new", stamp(0), stamp(1), "good", {"v": 1}), [HEALTHY], 16, POLICY,
         Action.PROMOTE, "new", ""),
        # no stable revision yet, or autoRollback off: hold and say so
        (NO_STABLE, [WAITING], 61, POLICY, Action.HOLD, "new", "ProgressDeadlineExceeded"),
        (ROLLING, [CRASHING], 5, Policy(60, 15, False, 3), Action.HOLD, "new", "CrashLooping"),
        # a failed revision is not retried: the stable one keeps running
        (RolloutState("good", None, None, "good", {"v": 1},
                      (FailedRevision("new", "CrashLooping", "m", stamp(0)),)),
         [WAITING], 500, POLICY, Action.HOLD_STABLE, "good", "CrashLooping"),
    ],
)  # fmt: skip
def test_decide(
    state: RolloutState,
    health: list[TargetHealth],
    now: float,
    policy: Policy,
    action: Action,
    apply: str,
    reason: str,
) -> None:
    plan = decide("new", SPEC, state, health, policy, at(now))
    assert (plan.action, plan.apply_revision, plan.reason) == (action, apply, reason)
    if action in (Action.ROLL_BACK, Action.HOLD) and reason:
        assert plan.state.failure("new") is not None
        assert plan.evidence or reason == "ProgressDeadlineExceeded"
    if action is Action.PROMOTE:
        assert (plan.state.stable_revision, plan.state.stable_spec) == ("new", SPEC)


def test_a_rollout_waits_while_its_nodes_are_away_and_the_deadline_moves_back() -> None:
    started = RolloutState("new", stamp(0), None, "old", {"model": {"version": "1"}})
    away = TargetHealth("cpu", 2, 0, False, blocked="every node it runs on is unavailable")
    waiting = decide("new", SPEC, started, [away], POLICY, at(50))
    assert (waiting.action, waiting.reason) == (Action.ROLL_FORWARD, "NodesUnavailable")
    assert waiting.state.paused_at == stamp(50)
    still = decide("new", SPEC, waiting.state, [away], POLICY, at(500))  # past the deadline
    assert still.action is Action.ROLL_FORWARD and still.state.paused_at == stamp(50)
    back = TargetHealth("cpu", 2, 0, True)
    resumed = decide("new", SPEC, still.state, [back], POLICY, at(510))
    assert resumed.action is Action.ROLL_FORWARD  # 50 s of the 60 s deadline used, not 510
    assert resumed.state.started_at == stamp(460) and resumed.state.paused_at is None
    assert decide("new", SPEC, resumed.state, [back], POLICY, at(520)).action is (
        Action.ROLL_FORWARD
    )
    assert decide("new", SPEC, resumed.state, [back], POLICY, at(521)).action is Action.ROLL_BACK


def test_stable_revision_asked_for_again_is_steady() -> None:
    plan = decide("good", {"v": 1}, STABLE, [WAITING], POLICY, at(999))
    assert plan.action is Action.STEADY


def test_state_round_trips_through_status() -> None:
    state = RolloutState("new", stamp(0), stamp(3), "good", {"v": 1},
                         (FailedRevision("bad", "CrashLooping", "m", stamp(1)),))  # fmt: skip
    assert state_from_status(state_to_status(state)) == state


def test_target_health_reads_pods_of_its_revision_only() -> None:
    crashing = pod("cpu", "n2", "new", ready=False)
    crashing["status"]["containerStatuses"] = [
        {"restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    ]
    pods = [pod("cpu", "n1", "old"), pod("cpu", "n1", "new"), crashing]
    health = target_health("cpu", "new", 2, True, pods, ready_since=stamp(5),
                           failure_threshold=3)  # fmt: skip
    assert (health.ready, health.healthy) == (1, False)
    assert [str(e) for e in health.crashing] == ["pod cpu-n2 on n2: CrashLoopBackOff (4 restarts)"]
    assert health.lost == (
        Evidence("n2", "pod cpu-n2 on n2"),
    )  # no transition time: taken as a change


def test_only_a_pod_that_turned_not_ready_after_the_target_was_ready_lost_readiness() -> None:
    def with_ready(p: dict[str, Any], when: float) -> dict[str, Any]:
        p["status"]["conditions"][0]["lastTransitionTime"] = stamp(when)
        return p

    starting = with_ready(pod("cpu", "slow", "new", ready=False), 0)  # still starting
    dropped = with_ready(pod("cpu", "flaky", "new", ready=False), 30)  # was Ready, is not
    health = target_health("cpu", "new", 3, True, [starting, dropped], ready_since=stamp(20),
                           failure_threshold=3)  # fmt: skip
    assert health.lost == (Evidence("flaky", "pod cpu-flaky on flaky"),)
    never = target_health("cpu", "new", 3, True, [starting, dropped], ready_since=None,
                          failure_threshold=3)  # fmt: skip
    assert never.lost == ()


def test_pods_made_after_the_target_was_ready_or_never_reported_did_not_lose_it() -> None:
    """A fleet's first rollout in waves: after the first wave was Ready, the DaemonSet's
    other pods (made at the same time, not yet reported by their nodes) are not lost."""
    unreported = pod("cpu", "late", "new", ready=False)
    unreported["status"]["conditions"] = []
    newer = pod("cpu", "newer", "new", ready=False)
    newer["metadata"]["creationTimestamp"] = stamp(30)
    newer["status"]["conditions"][0]["lastTransitionTime"] = stamp(31)
    older = pod("cpu", "older", "new", ready=False)
    older["metadata"]["creationTimestamp"] = stamp(5)
    older["status"]["conditions"][0]["lastTransitionTime"] = stamp(31)
    health = target_health("cpu", "new", 3, True, [unreported, newer, older],
                           ready_since=stamp(20), failure_threshold=3)  # fmt: skip
    assert health.lost == (Evidence("older", "pod cpu-older on older"),)


def test_a_pod_that_lost_readiness_after_starting_counts_before_the_target_is_ready() -> None:
    """A large fleet is never all Ready at once: the pod's own history says it was Ready."""

    def running(name: str, started: float, changed: float, reason: str = "") -> dict[str, Any]:
        p = pod("cpu", name, "new", ready=False)
        p["status"]["conditions"][0].update(lastTransitionTime=stamp(changed), reason=reason)
        p["status"]["containerStatuses"] = [
            {"name": "server", "state": {"running": {"startedAt": stamp(started)}}}
        ]
        return p

    pods = [
        running("dropped", 10, 30, "ContainersNotReady"),  # Ready, then the kubelet said no
        running("starting", 10, 5, "ContainersNotReady"),  # not Ready since before it ran
        running("fresh", 10, 10, "ContainersNotReady"),  # set not Ready as it started
        running("node-lost", 10, 30),  # marked by the node lifecycle controller: no reason
    ]
    health = target_health("cpu", "new", 4, False, pods, ready_since=None, failure_threshold=3)
    assert health.lost == (Evidence("dropped", "pod cpu-dropped on dropped"),)


def observe(writer: RecordingWriter, rev: str, ready_pods: bool) -> Observed:
    """The cluster after the last apply: the Deployment settled, its pods on `rev`."""
    pods = [pod("cpu", n, rev, ready=ready_pods) for n in ("cpu-0", "cpu-1")]
    return Observed(FLEET, writer.children(2 if ready_pods else 0), pods)


def step(body: dict[str, Any], observed: Observed, writer: RecordingWriter, t: float) -> Any:
    outcome = reconcile(body, observed, Ports(writer), CONFIG, at(t))
    body["status"] = outcome.status
    return outcome


def image(writer: RecordingWriter) -> str:
    return str(writer.workload["spec"]["template"]["spec"]["containers"][0]["image"])


def test_good_bad_rollback_bad_again_then_good() -> None:
    body = edgemodel(targets=[{"name": "cpu", "accelerator": "cpu", "replicas": 2,
                               "image": "server:1"}])  # fmt: skip
    writer = RecordingWriter()
    good = step(body, Observed(FLEET, [], []), writer, 0).status["revision"]
    step(body, observe(writer, good, True), writer, 1)
    assert step(body, observe(writer, good, True), writer, 20).action == "Promote"

    bad_body = copy.deepcopy(body)
    bad_body["spec"]["targets"][0]["image"] = "server:2-never-ready"
    bad_body["metadata"]["generation"] = 2
    bad = step(bad_body, observe(writer, good, True), writer, 30).status["revision"]
    assert image(writer) == "server:2-never-ready"
    assert step(bad_body, observe(writer, bad, False), writer, 100).action == "RollForward"
    rolled = step(bad_body, observe(writer, bad, False), writer, 151)  # deadline 120 s
    assert rolled.action == "RollBack"
    assert image(writer) == "server:1"  # the stable workload is applied again
    degraded = cond(rolled.status, "Degraded")
    assert degraded["reason"] == "RolledBack"
    assert f"Revision {bad} failed (ProgressDeadlineExceeded" in degraded["message"]
    assert f"stable revision {good}" in degraded["message"]
    assert "pod cpu-cpu-0 on cpu-0" in degraded["message"]
    assert ("Warning", "RolledBack") in [(e.type, e.reason) for e in rolled.events]
    assert rolled.status["phase"] == "RolledBack"
    assert [f["revision"] for f in rolled.status["failedRevisions"]] == [bad]

    held = step(bad_body, observe(writer, good, True), writer, 400)  # no flapping
    assert held.action == "HoldStable" and image(writer) == "server:1"
    applied = len(writer.applied)
    step(bad_body, observe(writer, good, True), writer, 401)
    assert len(writer.applied) == applied  # nothing re-applied while holding

    worse = copy.deepcopy(bad_body)  # bad -> bad: the last good one stays
    worse["spec"]["targets"][0]["image"] = "server:3-crash"
    worse["metadata"]["generation"] = 3
    worse_rev = step(worse, observe(writer, good, True), writer, 410).status["revision"]
    crashing = observe(writer, worse_rev, False)
    for p in crashing.pods:
        p["status"]["containerStatuses"] = [{"restartCount": 3, "state": {}}]  # type: ignore[index]
    assert step(worse, crashing, writer, 415).action == "RollBack"
    assert image(writer) == "server:1"
    assert worse["status"]["stableRevision"] == good

    fixed = copy.deepcopy(worse)  # bad -> good: rolls forward and is promoted
    fixed["spec"]["targets"][0]["image"] = "server:4"
    fixed["metadata"]["generation"] = 4
    fixed_rev = step(fixed, observe(writer, good, True), writer, 500).status["revision"]
    assert image(writer) == "server:4"
    step(fixed, observe(writer, fixed_rev, True), writer, 502)
    promoted = step(fixed, observe(writer, fixed_rev, True), writer, 520)
    assert promoted.action == "Promote"
    assert cond(promoted.status, "Degraded")["status"] == "False"
    assert cond(promoted.status, "RolledBack")["status"] == "False"
    assert fixed["status"]["stableRevision"] == fixed_rev


def test_a_held_revision_that_turns_healthy_is_promoted_after_all() -> None:
    failure = FailedRevision("new", "ProgressDeadlineExceeded", "m", stamp(61))
    held = RolloutState("new", stamp(0), None, None, None, (failure,))
    waiting = decide("new", SPEC, held, [HEALTHY], POLICY, at(100))
    assert waiting.action is Action.HOLD and waiting.state.ready_since == stamp(100)
    promoted = decide("new", SPEC, waiting.state, [HEALTHY], POLICY, at(116))
    assert promoted.action is Action.PROMOTE
    assert promoted.state.stable_revision == "new" and promoted.state.failed == ()


def _gated(observed: Observed, ips: list[str], passed: bool | None = None) -> Observed:
    """Pods as the kubelet reports them behind the probe's readiness gate: containers ready,
    Ready only once the gate's condition is True (`passed`; None: not probed yet)."""
    for p, ip in zip(observed.pods, ips, strict=True):
        spec, status = p["spec"], p["status"]  # type: ignore[index]
        spec["readinessGates"] = [{"conditionType": "edgeai.dev/probe-passed"}]
        spec["containers"] = [{"name": "server",
                               "ports": [{"name": "http", "containerPort": 8080}]}]  # fmt: skip
        status["podIP"] = ip
        status["conditions"] = [
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True" if passed else "False"},
        ]
        if passed is not None:
            status["conditions"].append(
                {"type": "edgeai.dev/probe-passed", "status": "True" if passed else "False"}
            )
    return observed


def test_a_pod_failing_the_active_probe_is_kept_out_and_rolls_back_with_its_answer() -> None:
    settings = replace(CONFIG, probe_gate=True)
    body = edgemodel(targets=[{"name": "cpu", "accelerator": "cpu", "replicas": 2,
                               "image": "server:1"}])  # fmt: skip
    writer = RecordingWriter()
    calls: list[tuple[list[tuple[str, str]], int, str]] = []

    def prober(pods: Mapping[str, str], port: int, model: str, timeout: float) -> Any:
        calls.append((sorted(pods.items()), port, model))
        failing = "an inference answered 500: model failed"
        return {name: failing if ip == "10.0.0.9" else None for name, ip in pods.items()}

    def run(observed: Observed, t: float) -> Any:
        outcome = reconcile(body, observed, Ports(writer, prober=prober), settings, at(t))
        body["status"] = outcome.status
        return outcome

    good = run(Observed(FLEET, [], []), 0).status["revision"]
    template = writer.workload["spec"]["template"]["spec"]
    assert template["readinessGates"] == [{"conditionType": "edgeai.dev/probe-passed"}]
    run(_gated(observe(writer, good, True), ["10.0.0.1", "10.0.0.2"]), 1)
    assert calls == [([("cpu-cpu-0", "10.0.0.1"), ("cpu-cpu-1", "10.0.0.2")], 8080, "digits")]
    assert [(pod, c["status"]) for pod, c in writer.conditions] == [
        ("cpu-cpu-0", "True"), ("cpu-cpu-1", "True")]  # fmt: skip
    serving = ["10.0.0.1", "10.0.0.2"]
    run(_gated(observe(writer, good, True), serving, True), 2)  # the kubelet saw the gate pass
    assert run(_gated(observe(writer, good, True), serving, True), 20).action == "Promote"
    calls.clear()
    run(_gated(observe(writer, good, True), serving, True), 30)
    assert calls == []  # a pod that passed is not probed again

    body["spec"]["targets"][0]["image"] = "server:2"
    body["metadata"]["generation"] = 2
    bad = run(_gated(observe(writer, good, True), serving, True), 40)
    seen = _gated(observe(writer, bad.status["revision"], True), ["10.0.0.8", "10.0.0.9"])
    rolled = run(seen, 41)
    assert rolled.action == "RollBack"
    assert calls == [([("cpu-cpu-0", "10.0.0.8"), ("cpu-cpu-1", "10.0.0.9")], 8080, "digits")]
    assert writer.conditions[-1] == ("cpu-cpu-1", {
        "type": "edgeai.dev/probe-passed", "status": "False", "reason": "ProbeFailed",
        "message": "an inference answered 500: model failed",
        "lastProbeTime": "2026-11-25T12:00:41Z", "lastTransitionTime": "2026-11-25T12:00:41Z",
    })  # fmt: skip
    message = cond(rolled.status, "Degraded")["message"]
    assert "ProbeFailed" in message
    assert "pod cpu-cpu-1 on cpu-1: an inference answered 500: model failed" in message


def test_the_worker_looks_again_when_a_deadline_or_window_ends() -> None:
    from edgemodel_operator.reconcile.rollout import Plan, next_check

    rolling = Plan(Action.ROLL_FORWARD, "new", RolloutState("new", stamp(0)))
    assert next_check(rolling, POLICY, at(10)) == 50.1  # the 60 s deadline, a tenth past
    stable_soon = Plan(Action.ROLL_FORWARD, "new", RolloutState("new", stamp(0), stamp(20)))
    assert next_check(stable_soon, POLICY, at(25)) == 10.1  # the 15 s window ends at 35
    assert next_check(Plan(Action.STEADY, "good", STABLE), POLICY, at(25)) is None
    paused = Plan(Action.ROLL_FORWARD, "new", RolloutState("new", stamp(0), paused_at=stamp(5)))
    assert next_check(paused, POLICY, at(10)) is None  # nodes away: the deadline waits too
