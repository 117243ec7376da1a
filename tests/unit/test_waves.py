"""Waves: node order (canaries first), cumulative sizes, which pods move now, and decide()
advancing wave by wave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_service import pod

from edgemodel_operator.api.spec import Wave
from edgemodel_operator.reconcile.health import Evidence, TargetHealth
from edgemodel_operator.reconcile.observed import node_info
from edgemodel_operator.reconcile.rollout import Action, Policy, decide
from edgemodel_operator.reconcile.rollout_state import RolloutState
from edgemodel_operator.reconcile.waves import (
    node_order,
    pods_to_replace,
    unavailable_budget,
    wave_sizes,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_sizes_are_cumulative_and_end_with_every_node() -> None:
    assert wave_sizes([Wave(percent=5), Wave(percent=25), Wave(percent=100)], 1500) == [
        75, 375, 1500
    ]  # fmt: skip
    assert wave_sizes([Wave(count=1), Wave(percent=50)], 6) == [1, 3, 6]
    assert wave_sizes([Wave(percent=1)], 3) == [1, 3]  # never an empty wave
    assert unavailable_budget("25%", 6) == 2 and unavailable_budget(0, 6) == 1


def test_canaries_go_first() -> None:
    labels = {"b": {"canary": "yes"}, "c": {}, "a": {}}
    assert node_order(["c", "a", "b"], labels, {"canary": "yes"}) == ["b", "a", "c"]
    assert node_order(["c", "a", "b"], labels, {}) == ["a", "b", "c"]


def test_pods_move_within_the_wave_and_the_budget() -> None:
    order = ["n1", "n2", "n3", "n4"]
    pods = [pod("t", n, "old") for n in order]
    assert pods_to_replace(order, 3, pods, "new", budget=2) == ["t-n1", "t-n2"]
    pods[0] = pod("t", "n1", "new", ready=False)  # n1 is moving: it takes the budget
    assert pods_to_replace(order, 3, pods, "new", budget=2) == ["t-n2"]
    broken = [pod("t", n, "bad", ready=False) for n in order]  # not serving: all go at once
    assert pods_to_replace(order, 4, broken, "good", budget=1) == [f"t-{n}" for n in order]


def test_a_node_just_back_keeps_its_pod_until_the_node_controller_lifts_its_taint() -> None:
    """A pod bound to a node the controller still taints as unreachable is marked NotReady
    by it (a simulated board never posts Ready again): the replacement waits."""
    back = node_info({"metadata": {"name": "n2", "resourceVersion": "7"}, "spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}})  # fmt: skip
    assert back.settling and not back.unavailable
    order = ["n1", "n2", "n3"]
    pods = [pod("t", n, "old", ready=False) for n in order]
    assert pods_to_replace(order, 3, pods, "new", budget=3, settling={"n2"}) == ["t-n1", "t-n3"]
    assert not node_info({"metadata": {"name": "n2", "resourceVersion": "8"}}).settling


def test_decide_advances_waves_then_promotes() -> None:
    policy = Policy(60, 10, True, 3)
    state = RolloutState("new", "2026-11-25T12:00:00Z", None, "good", {"v": 1})
    wave1 = TargetHealth("edge", desired=6, ready=1, settled=True, expected=1)
    plan = decide("new", {}, state, [wave1], policy, T0 + timedelta(seconds=5))
    assert plan.action is Action.ROLL_FORWARD and plan.state.ready_since
    plan = decide("new", {}, plan.state, [wave1], policy, T0 + timedelta(seconds=16))
    assert (plan.action, plan.reason, plan.state.wave) == (Action.ROLL_FORWARD, "NextWave", 1)
    # the deadline restarts with each wave
    wave2 = TargetHealth("edge", 6, 1, True, not_ready=(Evidence("n2", "pod x on n2"),), expected=3)
    later = decide("new", {}, plan.state, [wave2], policy, T0 + timedelta(seconds=70))
    assert later.action is Action.ROLL_FORWARD
    failed = decide("new", {}, plan.state, [wave2], policy, T0 + timedelta(seconds=77))
    assert (failed.action, failed.reason) == (Action.ROLL_BACK, "ProgressDeadlineExceeded")
    done = TargetHealth("edge", 6, 6, True, expected=6)
    last = replace_wave(plan.state, 2)
    ready = decide("new", {}, last, [done], policy, T0 + timedelta(seconds=100))
    promoted = decide("new", {}, ready.state, [done], policy, T0 + timedelta(seconds=111))
    assert promoted.action is Action.PROMOTE


def replace_wave(state: RolloutState, wave: int) -> RolloutState:
    from dataclasses import replace

    return replace(state, wave=wave, ready_since=None)
