"""Fleet rollouts on fleets as they are: offline and cordoned nodes left out of the counts,
failing nodes held back within the success threshold, OTA figures, nodes catching up."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from fixtures import node, spec
from test_service import CONFIG, RecordingWriter, cond, pod

from edgemodel_operator.api.spec import Target
from edgemodel_operator.reconcile.health import Evidence, TargetHealth
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.placement import Placement
from edgemodel_operator.reconcile.rollout import Action, Policy, decide
from edgemodel_operator.reconcile.rollout_state import RolloutState
from edgemodel_operator.reconcile.workloads import Nodes, _node_affinity
from edgemodel_operator.services.reconcile import Ports, reconcile

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(60, 10, True, 3, success_threshold=90)
ROLLING = RolloutState("new", "2026-12-01T12:00:00Z", None, "good", {"v": 1})


def crashing(node_: str) -> Evidence:
    return Evidence(node_, f"pod p-{node_} on {node_}: CrashLoopBackOff (5 restarts)")


def test_failing_nodes_within_the_threshold_are_held_back_and_the_rest_goes_on() -> None:
    # 12 nodes at 90 %: one may fail
    one_down = TargetHealth("edge", 12, 11, True, crashing=(crashing("n7"),), expected=12,
                            allowed_failures=1)  # fmt: skip
    plan = decide("new", {}, ROLLING, [one_down], POLICY, T0)
    assert (plan.action, plan.reason) == (Action.ROLL_FORWARD, "HeldBack")
    assert [(h.node, h.reason) for h in plan.state.held] == [("n7", "CrashLooping")]
    assert "CrashLoopBackOff" in plan.evidence[0]
    # the next pass judges the rest: 11 Ready + 1 held is the whole wave
    after = TargetHealth("edge", 12, 11, True, crashing=(crashing("n7"),), expected=12,
                         allowed_failures=1, held=frozenset({"n7"}))  # fmt: skip
    ready = decide("new", {}, plan.state, [after], POLICY, T0 + timedelta(seconds=1))
    assert ready.action is Action.ROLL_FORWARD and ready.state.ready_since
    promoted = decide("new", {}, ready.state, [after], POLICY, T0 + timedelta(seconds=12))
    assert promoted.action is Action.PROMOTE and promoted.state.completed_at
    assert [h.node for h in promoted.state.held] == ["n7"]  # still reported


def test_more_failures_than_allowed_roll_back_and_release_held_nodes() -> None:
    two_down = TargetHealth("edge", 12, 10, True, crashing=(crashing("n3"), crashing("n7")),
                            expected=12, allowed_failures=1)  # fmt: skip
    plan = decide("new", {}, ROLLING, [two_down], POLICY, T0)
    assert (plan.action, plan.reason) == (Action.ROLL_BACK, "CrashLooping")
    assert plan.state.held == ()
    at_100 = TargetHealth("edge", 12, 11, True, crashing=(crashing("n7"),), expected=12)
    strict = decide("new", {}, ROLLING, [at_100], Policy(60, 10, True, 3), T0)
    assert strict.action is Action.ROLL_BACK  # at 100 % one node is enough


def test_a_node_still_not_ready_at_the_deadline_is_held_within_the_threshold() -> None:
    stuck = TargetHealth("edge", 12, 11, True, not_ready=(Evidence("n2", "pod p on n2"),),
                         expected=12, allowed_failures=1)  # fmt: skip
    waiting = decide("new", {}, ROLLING, [stuck], POLICY, T0 + timedelta(seconds=30))
    assert waiting.action is Action.ROLL_FORWARD and not waiting.state.held
    late = decide("new", {}, ROLLING, [stuck], POLICY, T0 + timedelta(seconds=61))
    assert (late.reason, [h.reason for h in late.state.held]) == (
        "HeldBack",
        ["ProgressDeadlineExceeded"],
    )


def _fleet(n: int) -> list[dict[str, Any]]:
    return [node(f"edge-{i}", "cpu") for i in range(n)]


def _body(**rollout: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edgeai.dev/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "digits", "namespace": "line-3", "uid": "u", "generation": 1},
        "spec": spec({"name": "edge", "accelerator": "cpu", "placement": "perNode"},
                     rollout=rollout),
    }  # fmt: skip


def _ds(writer: RecordingWriter, desired: int, name: str = "digits-edge") -> dict[str, Any]:
    ds = copy.deepcopy(writer.live[("DaemonSet", name)])
    ds["status"] = {"observedGeneration": 1, "desiredNumberScheduled": desired,
                    "numberReady": desired, "updatedNumberScheduled": desired}  # fmt: skip
    return ds


def test_an_offline_and_a_cordoned_node_are_left_out_and_the_model_is_ready() -> None:
    offline = node("edge-4", "cpu")
    offline["status"]["conditions"] = [{"type": "Ready", "status": "Unknown",
                                        "reason": "NodeStatusUnknown"}]  # fmt: skip
    fleet = [*_fleet(4), offline, node("edge-5", "cpu", spec={"unschedulable": True})]
    writer = RecordingWriter()
    body = _body(waves=[{"percent": 50}, {"percent": 100}])
    first = reconcile(body, Observed(fleet, [], []), Ports(writer), CONFIG, T0)
    rev = first.status["revision"]
    body["status"] = first.status
    # the DaemonSet runs on all six (it tolerates both); only four count
    pods = [pod("edge", f"edge-{i}", rev, ready=i < 4) for i in range(6)]
    live = [_ds(writer, 6), *[o for o in writer.live.values() if o["kind"] == "Service"]]
    second = reconcile(body, Observed(fleet, live, pods), Ports(writer), CONFIG,
                       T0 + timedelta(seconds=1))  # fmt: skip
    target = second.status["targets"][0]
    assert (target["desired"], target["ready"], target["updated"], target["unavailable"]) == (
        4,
        4,
        4,
        2,
    )
    assert cond(second.status, "Ready")["status"] == "True"
    progress = second.status["rollout"]["progress"]
    assert progress["summary"] == "4 of 6 nodes updated (66.7 %), 2 unavailable, 0 failed"


def test_a_held_node_runs_the_stable_revision_from_a_daemonset_of_its_own() -> None:
    fleet = _fleet(10)
    writer = RecordingWriter()
    body = _body(successThreshold=90)
    t = T0
    first = reconcile(body, Observed(fleet, [], []), Ports(writer), CONFIG, t)
    good = first.status["revision"]
    body["status"] = first.status
    pods = [pod("edge", f"edge-{i}", good) for i in range(10)]
    live = lambda: [_ds(writer, 10), *[o for o in writer.live.values()  # noqa: E731
                                      if o["kind"] == "Service"]]  # fmt: skip
    for _ in range(3):  # Ready, then promoted after the stabilization window
        t += timedelta(seconds=16)
        body["status"] = reconcile(
            body, Observed(fleet, live(), pods), Ports(writer), CONFIG, t
        ).status
    assert body["status"]["stableRevision"] == good

    body["spec"]["model"]["version"] = "1.1.0"
    body["metadata"]["generation"] = 2
    t += timedelta(seconds=1)
    started = reconcile(body, Observed(fleet, live(), pods), Ports(writer), CONFIG, t)
    new = started.status["revision"]
    body["status"] = started.status
    broken = pod("edge", "edge-9", new, ready=False)
    broken["status"]["containerStatuses"] = [
        {"restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    ]
    pods = [pod("edge", f"edge-{i}", new) for i in range(9)] + [broken]
    t += timedelta(seconds=2)
    held = reconcile(body, Observed(fleet, live(), pods), Ports(writer), CONFIG, t)
    assert "NodesHeldBack" in [e.reason for e in held.events]
    body["status"] = held.status
    t += timedelta(seconds=1)
    after = reconcile(body, Observed(fleet, live(), pods), Ports(writer), CONFIG, t)
    main = writer.live[("DaemonSet", "digits-edge")]
    kept = writer.live[("DaemonSet", "digits-edge-held")]

    def fields(ds: dict[str, Any]) -> Any:
        terms = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        return terms[0]["matchFields"][0]  # fmt: skip

    assert fields(main) == {"key": "metadata.name", "operator": "NotIn", "values": ["edge-9"]}
    assert fields(kept) == {"key": "metadata.name", "operator": "In", "values": ["edge-9"]}
    assert kept["spec"]["template"]["metadata"]["annotations"]["edgeai.dev/revision"] == good
    assert main["spec"]["updateStrategy"] == {"type": "OnDelete"}
    status = after.status
    assert status["heldBack"]["revision"] == good
    assert status["targets"][0]["failed"] == 1
    assert cond(status, "Degraded")["reason"] == "NodesHeldBack"
    assert "edge-9" in cond(status, "Degraded")["message"]
    assert status["rollout"]["progress"]["summary"] == (
        "9 of 10 nodes updated (90.0 %), 0 unavailable, 1 failed"
    )


def test_several_held_nodes_are_named_one_per_field_requirement() -> None:
    """The API server takes one node name per matchFields requirement (In or NotIn)."""
    target = Target(name="edge", accelerator="cpu", precision="fp32", placement="perNode")
    placement = Placement(target=target, accelerator="cpu", precision="fp32", node_selector={},
                          tolerations=(), resource=None, nodes=("edge-0", "edge-1", "edge-2"),
                          archs=("amd64",))  # fmt: skip

    def terms(nodes: Nodes) -> list[dict[str, Any]]:
        found = _node_affinity(placement, nodes)
        assert found is not None
        return list(found["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"])  # fmt: skip

    arch = [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]
    assert terms(Nodes(skip=("edge-2", "edge-1"))) == [{"matchExpressions": arch, "matchFields": [
        {"key": "metadata.name", "operator": "NotIn", "values": ["edge-1"]},
        {"key": "metadata.name", "operator": "NotIn", "values": ["edge-2"]},
    ]}]  # fmt: skip
    assert terms(Nodes(only=("edge-2", "edge-1"))) == [
        {"matchExpressions": arch,
         "matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}
        for name in ("edge-1", "edge-2")
    ]  # fmt: skip


def test_a_node_back_online_catches_up_once_the_node_controller_lifts_its_taint() -> None:
    fleet = _fleet(4)
    writer = RecordingWriter()
    body = _body(waves=[{"percent": 50}, {"percent": 100}])
    t = T0
    body["status"] = reconcile(body, Observed(fleet, [], []), Ports(writer), CONFIG, t).status
    rev = body["status"]["revision"]
    pods = [pod("edge", f"edge-{i}", rev) for i in range(4)]
    live = [_ds(writer, 4), *[o for o in writer.live.values() if o["kind"] == "Service"]]
    for _ in range(4):  # through both waves, then promoted after the stabilization window
        t += timedelta(seconds=16)
        body["status"] = reconcile(body, Observed(fleet, live, pods), Ports(writer), CONFIG,
                                   t).status  # fmt: skip
    assert body["status"]["stableRevision"] == rev
    # edge-3 is back; the controller marked its old pod NotReady while it was away
    pods[3] = pod("edge", "edge-3", "older", ready=False)
    tainted = copy.deepcopy(fleet)
    tainted[3]["spec"]["taints"] = [{"key": "node.kubernetes.io/unreachable",
                                     "effect": "NoExecute"}]  # fmt: skip
    reconcile(body, Observed(tainted, live, pods), Ports(writer), CONFIG, t)
    assert writer.deleted == []  # a pod bound there now would be marked NotReady at once
    reconcile(body, Observed(fleet, live, pods), Ports(writer), CONFIG, t)
    assert writer.deleted == [("Pod", "line-3", "edge-edge-3")]
