"""The handler wiring, and which changes wake which EdgeModel's worker."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf

from edgemodel_operator.api.accelerators import DEFAULT_PROFILES
from edgemodel_operator.config import load_config
from edgemodel_operator.handlers.edgemodel import register
from edgemodel_operator.handlers.wakeups import Wakeups
from edgemodel_operator.reconcile import wakeups as w
from edgemodel_operator.reconcile.plan import Pass


def test_one_worker_per_edgemodel_and_watches_that_wake_it() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, load_config({"EDGEMODEL_RESYNC_SECONDS": "7"}))
    # Workers are tasks of the operator's own: no kopf daemon, so no finalizer on EdgeModels.
    assert not registry._spawning.get_all_handlers()
    assert not registry._changing.get_all_handlers()  # no diff-base annotations written
    watched = {h.selector.any_name for h in registry._watching.get_all_handlers()}  # type: ignore[attr-defined]
    assert {"nodes", "pods", "deployments", "daemonsets", "services", "edgemodels"} <= watched
    # Not EndpointSlices: a fleet's are rewritten at every pod change; the pods say as much.
    assert "endpointslices" not in watched
    # Nodes; Deployments, DaemonSets, Services; pods.
    assert len(registry._indexing.get_all_handlers()) == 5
    with_policies = kopf.OperatorRegistry()
    register(with_policies, load_config({"EDGEMODEL_NETWORK_POLICY": "true"}))
    assert len(with_policies._indexing.get_all_handlers()) == 6  # and NetworkPolicies


def test_watch_handlers_run_on_the_event_loop_not_in_the_pass_threads() -> None:
    """kopf runs a plain function in its thread pool, which the passes share: every watch
    event would wait for a pass thread while kopf queues the next ones."""
    registry = kopf.OperatorRegistry()
    register(registry, load_config({"EDGEMODEL_NETWORK_POLICY": "true"}))
    handlers = [*registry._indexing.get_all_handlers(), *registry._watching.get_all_handlers()]
    plain = [h.id for h in handlers if not asyncio.iscoroutinefunction(h.fn)]
    assert len(handlers) == 13 and plain == []


def test_a_selector_limits_the_edgemodels_handled() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, load_config({"EDGEMODEL_SELECTOR": "edgeai.dev/shard=a"}))
    [changed] = [h for h in registry._watching.get_all_handlers()
                 if h.selector.any_name == "edgemodels"]  # type: ignore[attr-defined]  # fmt: skip
    calls: list[tuple[str, Any]] = []
    memo = kopf.Memo(wakeups=Wakeups(DEFAULT_PROFILES), workers=type("W", (), {
        "seen": lambda self, key, body, indices: calls.append(("seen", key)),
        "gone": lambda self, key, deleted: calls.append(("gone", deleted)),
    })())  # fmt: skip

    def event(shard: str, type: str | None = "MODIFIED") -> None:
        body = {"metadata": {"namespace": "ns", "name": "m", "labels": {"edgeai.dev/shard": shard}},
                "spec": {"targets": []}}  # fmt: skip
        asyncio.run(changed.fn(body=kopf.Body(body), type=type, memo=memo))

    event("a")
    event("b")  # relabelled out of this operator's shard: its worker stops, the model stays
    event("a", "DELETED")
    assert calls == [("seen", ("ns", "m")), ("gone", False), ("gone", True)]


def _node(name: str, acc: str, ready: bool = True, heartbeat: str = "t0") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"edgeai.dev/accelerator": acc}},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "lastHeartbeatTime": heartbeat}]},
    }  # fmt: skip


def test_a_node_heartbeat_is_not_a_change_but_readiness_cordon_and_labels_are() -> None:
    base = _node("n", "gpu")
    assert w.node_signature(base) == w.node_signature(_node("n", "gpu", heartbeat="t1"))
    cordoned = copy.deepcopy(base)
    cordoned["spec"]["unschedulable"] = True
    for changed in (_node("n", "gpu", ready=False), cordoned, _node("n", "npu")):
        assert w.node_signature(changed) != w.node_signature(base)
    assert w.node_accelerators({"edgeai.dev/accelerator": "npu"}, DEFAULT_PROFILES) == {"npu"}
    assert w.node_accelerators({}, DEFAULT_PROFILES) == frozenset()


def test_the_models_own_status_does_not_wake_it() -> None:
    body = {"metadata": {"generation": 3, "labels": {"a": "b"}}, "status": {"phase": "Ready"}}
    after_status = {**body, "status": {"phase": "Progressing"}}
    assert w.model_essence(body) == w.model_essence(after_status)
    newer = {"metadata": {"generation": 4, "labels": {"a": "b"}}}
    assert w.model_essence(body) != w.model_essence(newer)


def test_a_slow_pass_spaces_the_next() -> None:
    assert w.pause(0.5, 0.01) == 0.5
    assert w.pause(0.5, 2.0) == 4.0


def test_settled_models_spread_their_timer_passes_as_they_grow_in_number() -> None:
    assert w.safety_net(10, 12) == 10  # a site: the resync as configured
    assert w.safety_net(10, 1000) == 50  # a thousand models: 20 timer passes a second
    assert w.safety_net(10, 5000) == 60  # never more than a minute
    steady = Pass(status={"phase": "Ready"}, action="Steady")
    assert w.settled(steady)
    for busy in (Pass(status={"phase": "Progressing"}, action="Steady"),
                 Pass(status={"phase": "Ready"}, action="Promote"),
                 Pass(status={"phase": "Ready"}, action="Steady", recheck_seconds=3.0),
                 Pass(status={"phase": "Ready"}, action="Steady", apply=[{"kind": "Service"}]),
                 Pass(status={"phase": "Building"}, action="Steady")):  # fmt: skip
        assert not w.settled(busy), busy


def test_wakeups_reach_only_the_models_concerned() -> None:
    async def scenario() -> None:
        wakeups = Wakeups(DEFAULT_PROFILES)
        gpu = wakeups.join(("ns", "on-gpu"), ["gpu", "cpu"])
        npu = wakeups.join(("ns", "on-npu"), ["npu"])
        wakeups.node("n1", _node("n1", "gpu"))  # first sight: a new node
        assert gpu.is_set() and not npu.is_set()
        gpu.clear()
        wakeups.node("n1", _node("n1", "gpu", heartbeat="t9"))
        assert not gpu.is_set()
        wakeups.node("n1", _node("n1", "npu"))  # relabeled: both accelerators concerned
        assert gpu.is_set() and npu.is_set()
        gpu.clear(), npu.clear()
        wakeups.node("n1", None)  # deleted
        assert npu.is_set() and not gpu.is_set()
        npu.clear()
        wakeups.model(("ns", "on-npu"), (1,))
        assert npu.is_set()
        npu.clear()
        wakeups.model(("ns", "on-npu"), (1,))  # the same essence: only the status changed
        assert not npu.is_set()
        wakeups.wake(("ns", "on-gpu"))
        assert gpu.is_set()
        wakeups.leave(("ns", "on-gpu"))
        wakeups.wake(("ns", "on-gpu"))  # gone: nothing to wake, no error

    asyncio.run(scenario())


class _Never:
    async def _forever(self) -> None:
        await asyncio.Event().wait()

    def wait(self) -> Any:
        return self._forever()


def test_a_worker_waits_for_a_wakeup_or_its_timer() -> None:
    async def scenario() -> None:
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert not await Wakeups.wait(wake, _Never(), 0.05)  # type: ignore[arg-type]
        assert loop.time() - t0 >= 0.05
        loop.call_later(0.01, wake.set)
        t0 = loop.time()
        assert await Wakeups.wait(wake, _Never(), 5.0)  # type: ignore[arg-type]
        assert loop.time() - t0 < 1.0

    asyncio.run(scenario())


def _pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": status}


def _waiting(reason: str, restarts: int) -> list[dict[str, Any]]:
    return [{"name": "server", "restartCount": restarts, "state": {"waiting": {"reason": reason}}}]


CRASHING = _pod(containerStatuses=_waiting("CrashLoopBackOff", 1))
STARTING = _pod(conditions=[{"type": "Ready", "status": "False"}],
                containerStatuses=_waiting("ContainerCreating", 0))  # fmt: skip
LOST = _pod(
    conditions=[{"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                 "lastTransitionTime": "2026-12-02T07:00:30Z"}],
    containerStatuses=[{"name": "server", "restartCount": 0,
                        "state": {"running": {"startedAt": "2026-12-02T07:00:00Z"}}}],
)  # fmt: skip
PROBE_FAILED = _pod(conditions=[{"type": "edgeai.dev/probe-passed", "status": "False"}])


def test_a_pod_showing_failing_evidence_is_told_apart_from_one_starting() -> None:
    assert w.failing(CRASHING) and w.failing(LOST) and w.failing(PROBE_FAILED)
    assert not w.failing(STARTING)


def test_failing_evidence_during_a_rollout_skips_the_pause_every_other_pass() -> None:
    # pause, woken, failing pod, rolling, the last pass skipped its pause -> the pause now
    assert w.pause_before_pass(0.5, True, False, True, False) == 0.5  # a burst: gathered
    assert w.pause_before_pass(0.5, True, True, True, False) == 0.0  # acted on at once
    assert w.pause_before_pass(0.5, True, True, True, True) == 0.5  # not twice running
    assert w.pause_before_pass(0.5, True, True, False, False) == 0.5  # no rollout under way
    assert w.pause_before_pass(0.5, False, False, False, False) == 0.0  # the clock: a deadline

    async def scenario() -> None:
        wakeups = Wakeups(DEFAULT_PROFILES)
        wake = wakeups.join(("ns", "m"), ["cpu"])
        wakeups.pod(("ns", "m"), STARTING)
        assert wake.is_set() and not wakeups.woken_by_failing_pod(("ns", "m"))
        wakeups.pod(("ns", "m"), CRASHING)
        assert wakeups.woken_by_failing_pod(("ns", "m"))
        assert not wakeups.woken_by_failing_pod(("ns", "m"))  # told once

    asyncio.run(scenario())


def test_the_pods_index_keeps_what_the_passes_read_of_a_pod() -> None:
    from edgemodel_operator.handlers.edgemodel import pods_index
    from edgemodel_operator.reconcile.health import crash, pod_ready

    waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}
    ended = {"terminated": {"exitCode": 1, "message": "model file missing"}}
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "managedFields": [{"manager": "kubelet"}],
                     "labels": {"app.kubernetes.io/managed-by": "edgemodel-operator",
                                "edgeai.dev/edgemodel": "m"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "server", "image": "i",
                                                   "ports": [{"containerPort": 8000}]}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7", "hostIP": "192.0.2.1",
                   "qosClass": "Burstable", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "server", "ready": False, "restartCount": 4,
                                          "state": waiting, "lastState": ended,
                                          "imageID": "sha256:1", "containerID": "c://1",
                                          "volumeMounts": [{"name": "model", "mountPath": "/m"}]}]},
    }  # fmt: skip
    kept = asyncio.run(pods_index(kopf.Body(pod)))[("ns", "m")]
    status = kept["status"]
    assert set(status) == {"phase", "podIP", "conditions", "containerStatuses"}
    assert status["containerStatuses"] == [{"name": "server", "ready": False, "restartCount": 4,
                                            "state": waiting, "lastState": ended}]  # fmt: skip
    assert crash(kept, 3) == crash(pod, 3) and "model file missing" in str(crash(kept, 3))
    assert not pod_ready(kept) and kept["spec"]["nodeName"] == "n1"
