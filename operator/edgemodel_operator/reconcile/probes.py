"""The active probe's bookkeeping, as data: which pods to probe in this pass, and the pod
condition their answers become.

Pods of an EdgeModel with the probe on carry a readiness gate (edgeai.dev/probe-passed):
they take no traffic until the operator has seen them answer readiness and one real
inference correctly. A pod whose containers are ready and whose gate is not yet True is
probed (again, if it failed before); its answer is written as the gate's condition, which
the rollout gates read (reconcile/rollout.py)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgemodel_operator.api.conditions import timestamp
from edgemodel_operator.api.names import PROBE_CONDITION

PROBES_PER_PASS = 16  # a large fleet is probed over a few passes
PASSED, FAILED = "ProbePassed", "ProbeFailed"


@dataclass(frozen=True)
class ProbeCall:
    pod: str
    address: str
    port: int


def _condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)


def gated(pod: Mapping[str, Any]) -> bool:
    gates = (pod.get("spec") or {}).get("readinessGates") or []
    return any(g.get("conditionType") == PROBE_CONDITION for g in gates)


def probe_failure(pod: Mapping[str, Any]) -> str | None:
    """What the probe saw when this pod last failed it; None unless it failed."""
    found = _condition(pod, PROBE_CONDITION)
    if found and found.get("status") == "False":
        return str(found.get("message") or "failed the active probe")
    return None


def serving_port(pod: Mapping[str, Any]) -> int | None:
    """The container port named http: where the model server answers."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http":
                return int(port["containerPort"])
    return None


def probe_calls(pods: Sequence[Mapping[str, Any]], limit: int = PROBES_PER_PASS) -> list[ProbeCall]:
    """Pods to probe now: gated, running, containers ready, gate not yet passed."""
    calls = []
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        ready = _condition(pod, "ContainersReady")
        passed = _condition(pod, PROBE_CONDITION)
        address, port = (pod.get("status") or {}).get("podIP"), serving_port(pod)
        if (
            gated(pod)
            and not pod["metadata"].get("deletionTimestamp")
            and address
            and port
            and ready is not None
            and ready.get("status") == "True"
            and (passed is None or passed.get("status") != "True")
        ):
            calls.append(ProbeCall(str(pod["metadata"]["name"]), str(address), port))
    return calls[:limit]


def probe_condition(failure: str | None, now: datetime) -> dict[str, Any]:
    stamp = timestamp(now)
    return {
        "type": PROBE_CONDITION,
        "status": "False" if failure else "True",
        "reason": FAILED if failure else PASSED,
        "message": failure or "Answered readiness and one inference as its model declares",
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }


def with_conditions(
    pods: Sequence[Mapping[str, Any]], conditions: Mapping[str, Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The pods as they are once `conditions` (pod name -> condition) are written."""
    out: list[Mapping[str, Any]] = []
    for pod in pods:
        new = conditions.get(str(pod["metadata"]["name"]))
        if new is None:
            out.append(pod)
            continue
        updated = copy.deepcopy(dict(pod))
        status = updated.setdefault("status", {})
        kept = [c for c in status.get("conditions") or [] if c.get("type") != new["type"]]
        status["conditions"] = [*kept, dict(new)]
        out.append(updated)
    return out
