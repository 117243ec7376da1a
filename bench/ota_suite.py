"""Suite `ota`: fleet rollouts as a fleet owner sees them, on the benchmark's simulated fleet
(KWOK), with the operator at its default resync (10 s).

1. Rollback after the first failing evidence, per gate: a version whose pods crash-loop
   (image tag `crash-every-1`), one whose pods turn NotReady after being Ready
   (`turns-not-ready`), one whose pods never become Ready (`never-ready`, caught by the
   progress deadline): seconds from the first evidence the benchmark sees (the first pod in
   CrashLoopBackOff, the first Ready pod turning NotReady, the deadline passing) until the
   EdgeModel says RolledBack=True. Repeats, medians.
2. An over-the-air update of the whole fleet in waves (10 %, 50 %, 100 %) with a success
   threshold of 95 %, 1 % of the nodes offline (the KWOK stage behind the node label
   kwok.edgeai.dev/offline) and 0.5 % failing on the new version (`crash-every-200`: nodes
   whose number is a multiple of 200): whether it completes, the status's own count of
   nodes updated, failed and unavailable against what the benchmark counts itself, and
   the time from apply to promotion."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from cluster_suites import FLEETS, cluster_for, fleet_counts, fleet_model, promoted
from common import log, median, ratio, rounded, wait_for
from kube import BenchCluster, Operator, condition
from kubernetes import watch

RESYNC = 10
REPEATS = {"tiny": 1, "full": int(os.environ.get("OTA_REPEATS", "3"))}
GATES = {  # gate -> (image tag of the bad version, progress deadline)
    "crash loop": ("1.1.0-crash-every-1", 600),
    "lost readiness": ("1.1.0-turns-not-ready", 600),
    "progress deadline": ("1.1.0-never-ready", 30),
}
# Pods of turns-not-ready lose readiness 10 s after becoming Ready: inside a 5 s x 3 window.
PROBE = {"periodSeconds": 5, "failureThreshold": 3}
OFFLINE_LABEL = "kwok.edgeai.dev/offline"
GOAL_S = 2.0  # rollback within 2 s of the first failing evidence


def _evidence(gate: str, pod: dict[str, Any]) -> bool:
    """The pod (as JSON) shows the gate's failing evidence."""
    status = pod.get("status") or {}
    if gate == "crash loop":
        waiting = [(cs.get("state") or {}).get("waiting") or {}
                   for cs in status.get("containerStatuses") or []]  # fmt: skip
        return any(w.get("reason") == "CrashLoopBackOff" for w in waiting)
    ready = next((x for x in status.get("conditions") or [] if x.get("type") == "Ready"), {})
    return ready.get("status") == "False" and "readiness probe failed" in (
        ready.get("message") or ""
    )


class FirstEvidence:
    """A watch on the namespace's pods noting when (monotonic) the first one shows it. The
    events stay JSON: turning 1,500 pods' events into client models kept the watch
    seconds behind the operator it times."""

    def __init__(self, c: BenchCluster, ns: str, gate: str) -> None:
        self.at: float | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._run, args=(c, ns, gate), daemon=True).start()

    def _run(self, c: BenchCluster, ns: str, gate: str) -> None:
        while not self._stop.is_set() and self.at is None:
            try:
                events = watch.Watch().stream(c.core.list_namespaced_pod, ns,
                                              timeout_seconds=30, deserialize=False)  # fmt: skip
                for event in events:
                    if self._stop.is_set():
                        return
                    if _evidence(gate, event["object"]):
                        self.at = time.monotonic()
                        return
            except Exception as err:  # a dropped watch is started again
                log(f"pod watch restarted: {err}")

    def stop(self) -> None:
        self._stop.set()


def _gate_model(tag: str, deadline: int) -> dict[str, Any]:
    em = fleet_model("digits", tag, deadline)
    em["spec"]["serving"]["probe"] = dict(PROBE)
    return em


def _gate_run(c: BenchCluster, ns: str, gate: str, timeout: float) -> float:
    tag, deadline = GATES[gate]
    c.apply(ns, _gate_model("1.0.0", deadline))
    wait_for(lambda: promoted(c, ns, "digits"), timeout=timeout, what="the good version")
    watcher = FirstEvidence(c, ns, gate) if gate != "progress deadline" else None
    c.apply(ns, _gate_model(tag, deadline))
    started = time.monotonic()
    try:
        wait_for(lambda: condition(c.get_em(ns, "digits"), "RolledBack") == "True",
                 timeout=deadline + timeout, every=0.05, what=f"{gate}: the rollback")  # fmt: skip
        rolled = time.monotonic()
        caught_up = time.monotonic() + 5.0  # the watch's last events may be on their way
        while watcher is not None and watcher.at is None and time.monotonic() < caught_up:
            time.sleep(0.05)
    finally:
        if watcher is not None:
            watcher.stop()
    seen = started + deadline if watcher is None else watcher.at
    if seen is None:
        raise RuntimeError(f"{gate}: rolled back before the benchmark saw any evidence")
    c.kubectl("delete", "edgemodel", "digits", "-n", ns, "--wait=true")
    wait_for(lambda: not c.core.list_namespaced_pod(ns, limit=1).items, timeout=timeout,
             what="the pods gone", every=1.0)  # fmt: skip
    return rolled - seen


def _ota_model(tag: str) -> dict[str, Any]:
    em = fleet_model("fleet", tag, 120)
    em["spec"]["rollout"].update(waves=[{"percent": 10}, {"percent": 50}, {"percent": 100}],
                                 successThreshold=95)  # fmt: skip
    return em


def _ota_run(c: BenchCluster, ns: str, offline: list[str], failing: int, total: int,
             timeout: float) -> dict[str, Any]:  # fmt: skip
    c.apply(ns, _ota_model("1.0.0"))
    wait_for(lambda: promoted(c, ns, "fleet"), timeout=timeout, what="the fleet on 1.0.0")
    for node in offline:
        c.core.patch_node(node, {"metadata": {"labels": {OFFLINE_LABEL: "true"}}})
    try:
        wait_for(lambda: all(_not_ready(c, n) for n in offline), timeout=60,
                 what="the offline nodes NotReady")  # fmt: skip
        t0 = time.monotonic()
        c.apply(ns, _ota_model("1.1.0-crash-every-200"))
        outcome = "promoted"
        try:
            wait_for(lambda: promoted(c, ns, "fleet") or condition(
                c.get_em(ns, "fleet"), "RolledBack") == "True", timeout=timeout,
                what="the update to finish")  # fmt: skip
        except TimeoutError as err:
            outcome = f"timeout: {err}"
        took = time.monotonic() - t0
        em = c.get_em(ns, "fleet")
        if condition(em, "RolledBack") == "True":
            outcome = "rolled back"
        progress = (em.get("status") or {}).get("rollout", {}).get("progress", {})
        held = (em.get("status") or {}).get("rollout", {}).get("heldNodes", [])
        updated = sum(1 for p in c.core.list_namespaced_pod(ns).items
                      if p.spec.node_name not in offline and "crash-every-200"
                      in p.spec.containers[0].image and any(
                          x.type == "Ready" and x.status == "True"
                          for x in p.status.conditions or []))  # fmt: skip
        return {
            "outcome": outcome,
            "seconds_to_complete": rounded(took, 1),
            "status_summary": progress.get("summary", ""),
            "status_updated": progress.get("updated"),
            "status_failed": progress.get("failed"),
            "status_unavailable": progress.get("unavailable"),
            "counted_updated_ready": updated,
            "expected_failed": failing,
            "expected_unavailable": len(offline),
            "nodes_reported_held": len(held),
            "success_rate": rounded(ratio(updated, total), 4),
        }
    finally:
        for node in offline:
            c.core.patch_node(node, {"metadata": {"labels": {OFFLINE_LABEL: None}}})
        c.kubectl("delete", "edgemodel", "fleet", "-n", ns, "--wait=true")


def _not_ready(c: BenchCluster, node: str) -> bool:
    found = c.core.read_node(node)
    return not any(x.type == "Ready" and x.status == "True" for x in found.status.conditions or [])


def suite_ota(size: str, work: Path) -> dict[str, Any]:
    fleet = FLEETS[size]
    counts = fleet_counts(fleet)
    expected = sum(counts.values())
    c = cluster_for(fleet)
    timeout = 180 + expected * 0.5
    op = Operator(c.kubeconfig, work / "operator.log", resync_seconds=RESYNC)
    op.start()
    gates: dict[str, Any] = {}
    try:
        for gate in GATES:
            runs = []
            for i in range(REPEATS[size]):
                ns = f"ota-{gate.replace(' ', '-')}-{i}"
                c.namespace(ns)
                runs.append(rounded(_gate_run(c, ns, gate, timeout), 2))
                log(f"ota: {gate} run {i}: rolled back {runs[-1]} s after the evidence")
            gates[gate] = {"runs_s": runs, "median_s": rounded(median(runs), 2),
                           "goal_reached": median(runs) <= GOAL_S}  # fmt: skip
        # 1 % offline: every 100th node from the 50th; 0.5 % failing: multiples of 200.
        offline = [f"edge-{acc}-{i}" for acc, n in counts.items() for i in range(50, n, 100)]
        failing = sum(len(range(0, n, 200)) for n in counts.values())
        ns = "ota-fleet"
        c.namespace(ns)
        ota = _ota_run(c, ns, offline, failing, expected, timeout * 2)
        log(f"ota: fleet update {ota}")
    finally:
        op.stop()
    return {
        "fleet": fleet,
        "nodes": expected,
        "resync_seconds": RESYNC,
        "goal_s": GOAL_S,
        "rollback_after_evidence": gates,
        "fleet_update": {
            "waves": "10 %, 50 %, 100 %; successThreshold 95 %",
            "offline_nodes": len(offline),
            "failing_nodes": failing,
            **ota,
        },
    }
