"""reconcile() with a recording writer: children, status, conditions and Events over a
sequence of observations, the way the operator sees a model come up."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fixtures import FLEET, edgemodel

from edgemodel_operator.api.names import PROBE_CONDITION
from edgemodel_operator.config import load_config
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.services.reconcile import Ports, reconcile
from edgemodel_operator.wiring import plan_settings

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CONFIG = plan_settings(load_config({}))


class RecordingWriter:
    """Records every write; `live` holds the last object applied per (kind, name)."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.live: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: list[tuple[str, str, str]] = []
        self.conditions: list[tuple[str, dict[str, Any]]] = []

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(dict(obj))
        stored["metadata"]["generation"] = 1
        self.applied.append(stored)
        self.live[(stored["kind"], stored["metadata"]["name"])] = stored
        return stored

    @property
    def workload(self) -> dict[str, Any]:
        """The workload applied last."""
        return next(a for a in reversed(self.applied) if a["kind"] in ("Deployment", "DaemonSet"))

    def children(self, ready_replicas: int) -> list[dict[str, Any]]:
        """What the cluster holds after the writes: workloads settled with that many Ready."""
        return [ready(o, ready_replicas) if o["kind"] in ("Deployment", "DaemonSet") else o
                for o in self.live.values()]  # fmt: skip

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, namespace, name))

    def set_pod_condition(self, namespace: str, pod: str, condition: Mapping[str, Any]) -> None:
        self.conditions.append((pod, dict(condition)))


def ready(workload: dict[str, Any], n: int) -> dict[str, Any]:
    done = copy.deepcopy(workload)
    done["status"] = {"observedGeneration": 1, "readyReplicas": n, "updatedReplicas": n}
    return done


def pod(target: str, node: str, revision: str = "", ready: bool = True) -> dict[str, Any]:
    labels = {"edgeai.dev/edgemodel": "digits", "edgeai.dev/target": target}
    meta = {
        "name": f"{target}-{node}",
        "labels": labels,
        "annotations": {"edgeai.dev/revision": revision},
    }
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": meta, "spec": {"nodeName": node}, "status": status}  # fmt: skip


def cond(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_create_then_ready_then_steady() -> None:
    body = edgemodel(targets=[{"name": "cpu", "accelerator": "cpu", "replicas": 2}])
    writer = RecordingWriter()
    first = reconcile(body, Observed(FLEET, [], []), Ports(writer), CONFIG, T0)
    created = [(a["kind"], a["metadata"]["name"]) for a in writer.applied]
    assert created == [("Deployment", "digits-cpu"), ("Service", "digits-cpu")]
    assert first.status["phase"] == "Progressing"
    assert cond(first.status, "Ready")["status"] == "False"
    assert cond(first.status, "Progressing")["reason"] == "RollingOut"
    rev = first.status["revision"]
    assert [(e.reason, e.message) for e in first.events] == [
        ("Created", f"Created Deployment digits-cpu, Service digits-cpu for revision {rev}")
    ]

    body["status"] = first.status
    rev = first.status["revision"]
    live = writer.children(2)
    pods = [pod("cpu", "cpu-0", rev), pod("cpu", "cpu-1", rev)]
    t1 = T0 + timedelta(seconds=2)
    second = reconcile(body, Observed(FLEET, live, pods), Ports(writer), CONFIG, t1)
    assert len(writer.applied) == 2  # nothing drifted: no write
    assert second.status["phase"] == "Ready"
    assert second.status["targetsReady"] == "1/1"
    assert second.status["targets"][0]["nodes"] == ["cpu-0", "cpu-1"]
    assert cond(second.status, "Ready")["lastTransitionTime"] == "2026-11-25T12:00:02Z"
    assert cond(second.status, "Progressing")["reason"] == "Stabilizing"
    assert [(e.type, e.reason) for e in second.events] == [("Normal", "Ready")]

    body["status"] = second.status  # 15 s later (3 probe periods of 5 s): promoted
    t2 = t1 + timedelta(seconds=15)
    third = reconcile(body, Observed(FLEET, live, pods), Ports(writer), CONFIG, t2)
    assert third.status["stableRevision"] == rev
    assert [e.reason for e in third.events] == ["Promoted"]

    body["status"] = third.status
    fourth = reconcile(body, Observed(FLEET, live, pods), Ports(writer), CONFIG, t2 + timedelta(1))
    assert fourth.status == third.status and fourth.events == []


def test_removed_target_is_deleted() -> None:
    body = edgemodel(targets=[{"name": "cpu", "accelerator": "cpu"}])
    stale = {"kind": "DaemonSet", "metadata": {"name": "digits-npu", "labels": {}}}
    writer = RecordingWriter()
    outcome = reconcile(body, Observed(FLEET, [stale], []), Ports(writer), CONFIG, T0)
    assert writer.deleted == [("DaemonSet", "line-3", "digits-npu")]
    assert "Deleted" in [e.reason for e in outcome.events]


def test_no_matching_nodes_is_degraded_with_a_warning() -> None:
    body = edgemodel(
        targets=[{"name": "x", "accelerator": "gpu", "nodeSelector": {"site": "nowhere"}}]
    )
    outcome = reconcile(body, Observed(FLEET, [], []), Ports(RecordingWriter()), CONFIG, T0)
    degraded = cond(outcome.status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "NoMatchingNodes")
    assert "edgeai.dev/accelerator=gpu" in degraded["message"]
    assert outcome.status["phase"] == "Degraded"
    assert ("Warning", "NoMatchingNodes") in [(e.type, e.reason) for e in outcome.events]


def test_invalid_spec_keeps_children_and_says_why() -> None:
    body = edgemodel(targets=[{"name": "cpu", "accelerator": "cpu", "precision": "fp16"}])
    body["status"] = {"revision": "abc", "targets": [{"name": "cpu"}]}
    writer = RecordingWriter()
    outcome = reconcile(body, Observed(FLEET, [], []), Ports(writer), CONFIG, T0)
    assert writer.applied == [] and writer.deleted == []
    assert outcome.status["phase"] == "Failed"
    assert outcome.status["revision"] == "abc"
    assert cond(outcome.status, "Ready")["reason"] == "InvalidSpec"
    assert "fp32 or int8" in cond(outcome.status, "Degraded")["message"]
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]


def test_pods_the_scheduler_cannot_place_are_named_with_its_reason() -> None:
    body = edgemodel(targets=[{"name": "gpu", "accelerator": "gpu", "replicas": 4}])
    writer = RecordingWriter()
    reconcile(body, Observed(FLEET, [], []), Ports(writer), CONFIG, T0)
    live = ready(writer.workload, 2)
    pending = pod("gpu", "")
    pending["status"] = {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/5 nodes are available: 2 Insufficient nvidia.com/gpu, 3 node(s) didn't "
                   "match Pod's node affinity/selector. preemption: 0/5 nodes are available",
    }]}  # fmt: skip
    pods = [pod("gpu", "gpu-0"), pod("gpu", "gpu-1"), pending, pending]
    pending["spec"] = {}
    outcome = reconcile(body, Observed(FLEET, [live], pods), Ports(writer), CONFIG, T0)
    degraded = cond(outcome.status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "Unschedulable")
    assert degraded["message"] == (
        "target gpu: 2 pod(s) cannot be scheduled: 0/5 nodes are available: 2 Insufficient "
        "nvidia.com/gpu, 3 node(s) didn't match Pod's node affinity/selector."
    )
    assert cond(outcome.status, "Ready")["reason"] == "Unschedulable"
    assert ("Warning", "Unschedulable") in [(e.type, e.reason) for e in outcome.events]


class FreshReader:
    """What the API server holds now, unlike the (lagging) indices; records what was read."""

    def __init__(self, workloads: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.workloads, self.pods = workloads, pods
        self.reads: list[frozenset[str] | None] = []  # the nodes of each pod read; None: all

    @property
    def calls(self) -> int:
        return len(self.reads)

    def model_workloads(self, namespace: str, model: str) -> list[dict[str, Any]]:
        return self.workloads

    def model_pods(
        self, namespace: str, model: str, nodes: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        self.reads.append(nodes)
        return [p for p in self.pods if nodes is None or p["spec"]["nodeName"] in nodes]


def promoted_then_updated(
    writer: RecordingWriter, target: dict[str, Any], nodes: list[str], **spec: Any
) -> tuple[dict[str, Any], str, datetime]:
    """digits with one target promoted on v1, its pods Ready on `nodes`, then v2 applied;
    returns the body, v2's revision and the moment v2 was applied."""
    body = edgemodel(targets=[target], **spec)
    now = T0
    for _ in range(3):  # created, Ready, promoted
        rev = body.get("status", {}).get("revision", "")
        pods = [pod(target["name"], n, rev) for n in nodes]
        done = reconcile(body, Observed(FLEET, writer.children(len(nodes)), pods), Ports(writer),
                         CONFIG, now)  # fmt: skip
        body["status"], now = done.status, now + timedelta(seconds=20)
    assert body["status"].get("stableRevision")
    body["spec"]["model"]["version"] = "2.0.0"
    started = reconcile(body, Observed(FLEET, writer.children(0), []), Ports(writer), CONFIG, now)
    body["status"] = started.status
    return body, started.status["revision"], now


def rollout_past_its_deadline(writer: RecordingWriter) -> tuple[dict[str, Any], str, datetime]:
    """Two replicas past a 10 s progress deadline: v2 still not Ready in the indices 11 s
    after it was applied; returns the body, v2's revision and that moment."""
    body, v2, applied = promoted_then_updated(
        writer, {"name": "cpu", "accelerator": "cpu", "replicas": 2}, ["cpu-0", "cpu-1"],
        rollout={"progressDeadlineSeconds": 10},
    )  # fmt: skip
    return body, v2, applied + timedelta(seconds=11)


def test_a_rollback_is_confirmed_against_the_api_server_first() -> None:
    writer = RecordingWriter()
    body, v2, late = rollout_past_its_deadline(writer)
    stale = Observed(FLEET, writer.children(0), [])  # a watch down: nothing seen since
    ready = FreshReader(writer.children(2), [pod("cpu", "cpu-0", v2), pod("cpu", "cpu-1", v2)])
    failing = FreshReader(counting(writer.children(0), 1, 1, 0),
                          [pod("cpu", "cpu-0", v2, ready=False)])  # fmt: skip

    confirmed = reconcile(body, stale, Ports(RecordingWriter(), reader=ready), CONFIG, late)
    assert ready.calls == 1
    assert confirmed.action != "RollBack" and not confirmed.status.get("failedRevisions")
    assert cond(confirmed.status, "Ready")["status"] == "True"

    rolled = reconcile(body, stale, Ports(RecordingWriter(), reader=failing), CONFIG, late)
    assert rolled.action == "RollBack" and failing.calls == 1
    assert reconcile(body, stale, Ports(RecordingWriter()), CONFIG, late).action == "RollBack"


def counting(
    children: list[dict[str, Any]], pods: int, updated: int, ready_: int
) -> list[dict[str, Any]]:
    """The children with their workloads' status counting that many pods, of the current
    template and Ready."""
    status = {"observedGeneration": 1, "replicas": pods, "updatedReplicas": updated,
              "readyReplicas": ready_}  # fmt: skip
    return [{**c, "status": dict(status)} if c["kind"] in ("Deployment", "DaemonSet") else c
            for c in children]  # fmt: skip


def test_a_deadline_rollback_reads_no_pod_when_the_workloads_counts_agree() -> None:
    writer = RecordingWriter()
    body, v2, late = rollout_past_its_deadline(writer)
    seen = Observed(FLEET, writer.children(0), [pod("cpu", n, v2, ready=False)
                                                for n in ("cpu-0", "cpu-1")])  # fmt: skip
    agreeing = FreshReader(counting(writer.children(0), 2, 2, 0), [])
    rolled = reconcile(body, seen, Ports(RecordingWriter(), reader=agreeing), CONFIG, late)
    assert rolled.action == "RollBack" and agreeing.reads == []

    # Both pods turned Ready since the indices last heard: the counts say so, all pods read.
    healed = FreshReader(counting(writer.children(0), 2, 2, 2),
                         [pod("cpu", n, v2) for n in ("cpu-0", "cpu-1")])  # fmt: skip
    kept = reconcile(body, seen, Ports(RecordingWriter(), reader=healed), CONFIG, late)
    assert kept.action != "RollBack" and healed.reads == [None]


def crash_looping(p: dict[str, Any]) -> dict[str, Any]:
    p["status"]["conditions"][0]["status"] = "False"
    p["status"]["containerStatuses"] = [{"name": "server", "restartCount": 5, "state": {
        "waiting": {"reason": "CrashLoopBackOff"}}}]  # fmt: skip
    return p


def fleet_rollout(writer: RecordingWriter, nodes: list[str]) -> tuple[dict[str, Any], str]:
    """digits promoted on v1 on `nodes` (perNode), then v2 applied; returns the body and v2."""
    target = {"name": "cpu", "accelerator": "cpu", "placement": "perNode"}
    body, v2, _ = promoted_then_updated(writer, target, nodes)
    return body, v2


def test_a_crash_loop_rollback_reads_only_the_pods_of_the_nodes_in_its_evidence() -> None:
    writer = RecordingWriter()
    nodes = sorted(n["metadata"]["name"] for n in FLEET
                   if n["metadata"]["labels"].get("edgeai.dev/accelerator") == "cpu")  # fmt: skip
    body, v2 = fleet_rollout(writer, nodes)
    later = T0 + timedelta(seconds=70)
    seen = [pod("cpu", n, v2) for n in nodes]
    crash_looping(seen[0])
    live = writer.children(len(nodes) - 1)

    failing = FreshReader(live, [crash_looping(pod("cpu", nodes[0], v2)),
                                 *(pod("cpu", n, v2) for n in nodes[1:])])  # fmt: skip
    rolled = reconcile(body, Observed(FLEET, live, seen), Ports(RecordingWriter(),
                       reader=failing), CONFIG, later)  # fmt: skip
    assert rolled.action == "RollBack"
    assert failing.reads == [frozenset({nodes[0]})]

    # The index is stale: the pod on that node was replaced and runs fine now.
    healed = FreshReader(live, [pod("cpu", n, v2) for n in nodes])
    kept = reconcile(body, Observed(FLEET, live, seen), Ports(RecordingWriter(), reader=healed),
                     CONFIG, later)  # fmt: skip
    assert kept.action != "RollBack" and not kept.status.get("failedRevisions")
    assert healed.reads == [frozenset({nodes[0]})]


def test_where_one_failing_node_fails_the_rollout_a_few_of_the_nodes_are_read(
    monkeypatch: Any,
) -> None:
    # Two nodes stand for a fleet: one of them is "a few" here.
    monkeypatch.setattr("edgemodel_operator.services.reconcile.PROOF_NODES", 1)
    later = T0 + timedelta(seconds=70)
    for threshold, reads in ((100, [frozenset({"cpu-0"})]), (50, [frozenset({"cpu-0", "cpu-1"})])):
        writer = RecordingWriter()
        target = {"name": "cpu", "accelerator": "cpu", "placement": "perNode"}
        body, v2, _ = promoted_then_updated(writer, target, ["cpu-0", "cpu-1"],
                                            rollout={"successThreshold": threshold})  # fmt: skip
        live = writer.children(0)
        both = [crash_looping(pod("cpu", n, v2)) for n in ("cpu-0", "cpu-1")]
        reader = FreshReader(live, [crash_looping(pod("cpu", n, v2)) for n in ("cpu-0", "cpu-1")])
        rolled = reconcile(body, Observed(FLEET, live, both),
                           Ports(RecordingWriter(), reader=reader), CONFIG, later)  # fmt: skip
        assert rolled.action == "RollBack"
        assert reader.reads == reads, threshold  # 50 %: one node may fail, so both are read


def probe_failed(p: dict[str, Any]) -> dict[str, Any]:
    p["status"]["conditions"].append({"type": PROBE_CONDITION, "status": "False",
                                      "message": "no answer in 2s"})  # fmt: skip
    return p


def test_evidence_of_another_gate_on_other_nodes_is_read_in_turn() -> None:
    writer = RecordingWriter()
    body, v2 = fleet_rollout(writer, ["cpu-0", "cpu-1"])
    later = T0 + timedelta(seconds=70)
    live = writer.children(0)
    # The index shows cpu-0's crash loop, which is over; cpu-1's failed probe is real.
    seen = [crash_looping(pod("cpu", "cpu-0", v2)), probe_failed(pod("cpu", "cpu-1", v2))]
    reader = FreshReader(live, [pod("cpu", "cpu-0", v2), probe_failed(pod("cpu", "cpu-1", v2))])
    rolled = reconcile(body, Observed(FLEET, live, seen), Ports(RecordingWriter(), reader=reader),
                       CONFIG, later)  # fmt: skip
    assert rolled.action == "RollBack"
    assert rolled.status["failedRevisions"][-1]["reason"] == "ProbeFailed"
    assert reader.reads == [frozenset({"cpu-0"}), frozenset({"cpu-1"})]


def test_a_rollout_says_how_many_pods_are_updated_not_only_ready() -> None:
    writer = RecordingWriter()
    target = {"name": "cpu", "accelerator": "cpu", "replicas": 2}
    body, v2, applied = promoted_then_updated(writer, target, ["cpu-0", "cpu-1"])
    halfway = counting(writer.children(0), 2, 1, 2)  # one on v2, both serving
    pods = [pod("cpu", "cpu-0", v2), pod("cpu", "cpu-1", "v1")]
    done = reconcile(body, Observed(FLEET, halfway, pods), Ports(writer), CONFIG, applied)
    assert cond(done.status, "Ready")["message"] == "Waiting for cpu 1/2 updated, 2/2 ready"
