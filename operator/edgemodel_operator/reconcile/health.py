"""What a target's pods of one revision say, gate by gate: Ready or not, crash-looping,
failing the active probe, or Ready once and not any more; each with the pod and node it
comes from (the evidence a rollback names)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgemodel_operator.api.names import REVISION_ANNOTATION
from edgemodel_operator.reconcile.probes import probe_failure

CRASH_REASONS = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerError")


@dataclass(frozen=True)
class Evidence:
    """What one pod shows, and the node it is on ("" before it is scheduled)."""

    node: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class TargetHealth:
    """One target's pods of the candidate revision."""

    name: str
    desired: int
    ready: int  # Ready pods of the candidate revision
    settled: bool  # the workload controller has seen the latest template
    not_ready: tuple[Evidence, ...] = ()  # "pod p on node n" for candidate pods not Ready
    crashing: tuple[Evidence, ...] = ()  # "pod p on node n: CrashLoopBackOff (5 restarts)"
    lost: tuple[Evidence, ...] = ()  # pods that were Ready and are not any more
    expected: int | None = None  # pods due on the revision in the current wave; None: all
    probe_failed: tuple[Evidence, ...] = ()  # "pod p on node n: what the active probe saw"
    blocked: str = ""  # why it cannot progress now: every node it runs on is unavailable
    allowed_failures: int = 0  # nodes due now that may fail (the success threshold)
    held: frozenset[str] = frozenset()  # its nodes held back: done, on the stable revision
    # Rollout analysis of the candidate's pods (reconcile/analysis.py): checks whose value
    # is outside its thresholds, and checks without an answer (they hold promotion).
    analysis_failed: tuple[str, ...] = ()
    analysis_pending: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        due = self.desired if self.expected is None else self.expected
        return self.settled and self.ready + len(self.held) >= due

    def without(self, nodes: frozenset[str]) -> TargetHealth:
        """This health once `nodes` are held back: their evidence no longer counts."""

        def keep(items: tuple[Evidence, ...]) -> tuple[Evidence, ...]:
            return tuple(e for e in items if e.node not in nodes)

        return replace(self, not_ready=keep(self.not_ready), crashing=keep(self.crashing),
                       lost=keep(self.lost), probe_failed=keep(self.probe_failed),
                       held=self.held | nodes)  # fmt: skip

    @property
    def final(self) -> bool:
        """Every pod is due on the revision: no wave is left."""
        return self.expected is None or self.expected >= self.desired


def pod_ready(pod: Mapping[str, Any]) -> bool:
    # A plain loop: read for every pod several times a pass, on fleets of thousands.
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def pod_revision(pod: Mapping[str, Any]) -> str | None:
    """The revision a pod was created from (its template's annotation)."""
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)


def _node(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _where(pod: Mapping[str, Any], why: str = "") -> Evidence:
    node = _node(pod)
    text = f"pod {pod['metadata']['name']} on {node or 'no node yet'}"
    return Evidence(node, f"{text}: {why}" if why else text)


def crash(pod: Mapping[str, Any], failure_threshold: int) -> str | None:
    """Why a pod's (init) container keeps failing, with its last words; None if it is not."""
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            restarts = int(cs.get("restartCount", 0))
            if waiting.get("reason") not in CRASH_REASONS and restarts < failure_threshold:
                continue
            why = waiting.get("reason") or "restarting"
            ended = (cs.get("lastState") or {}).get("terminated") or {}
            said = str(ended.get("message") or waiting.get("message") or "").strip()
            said = said.splitlines()[-1][:300] if said else ""
            init = f"init container {cs.get('name')}: " if key == "initContainerStatuses" else ""
            detail = f": {said}" if said else ""
            return f"{init}{why} ({restarts} restarts){detail}"
    return None


def target_health(
    name: str,
    revision: str,
    desired: int,
    settled: bool,
    pods: Sequence[Mapping[str, Any]],
    ready_since: str | None,
    failure_threshold: int,
    nodes: frozenset[str] | None = None,
) -> TargetHealth:
    """Health of one target's pods of `revision`. `ready_since`: since when the target has
    been Ready on this revision (None: it has not been); a pod that was there then and
    has turned not Ready since has lost its readiness. `nodes`: for a per-node target, the
    available nodes it runs on; pods on others (offline, cordoned) are not counted."""
    mine = [
        p
        for p in pods
        if pod_revision(p) == revision
        and not p["metadata"].get("deletionTimestamp")
        and (nodes is None or _node(p) in nodes)
    ]
    not_ready = [p for p in mine if not pod_ready(p)]
    return TargetHealth(
        name=name,
        desired=desired,
        ready=len(mine) - len(not_ready),
        settled=settled,
        not_ready=tuple(_where(p) for p in not_ready),
        crashing=tuple(_where(p, why) for p in mine if (why := crash(p, failure_threshold))),
        probe_failed=tuple(_where(p, why) for p in mine if (why := probe_failure(p))),
        lost=tuple(_where(p) for p in not_ready if lost(p, ready_since)),
    )


def lost(pod: Mapping[str, Any], ready_since: str | None) -> bool:
    """The pod went from Ready to not Ready. A pod waiting for a node, or one still
    starting (its Ready condition unchanged since before), is new.

    Two ways to know: the target was Ready and the pod's Ready condition changed since; or
    the pod's own history, for a large fleet that never is all Ready at once (its first
    pods lose readiness before its last are up): the condition turned False after the
    container started, so it was True in between, and the kubelet says why. The node
    lifecycle controller, marking the pods of a node it lost touch with, says nothing."""
    if not (pod.get("spec") or {}).get("nodeName"):
        return False
    status = pod.get("status") or {}
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    if not ready:
        return False  # its node has not reported on it yet: it never was Ready
    changed = str(ready.get("lastTransitionTime") or "")
    created = str((pod.get("metadata") or {}).get("creationTimestamp") or "")
    # There when the target was Ready (a pod made since, such as the rest of a fleet's
    # first rollout after its first wave, is new). No transition time (a hand-made pod):
    # take it as a change. ISO stamps sort by time.
    there = ready_since is not None and created <= ready_since
    if there and (not changed or changed > str(ready_since)):
        return True
    started = [
        str(((cs.get("state") or {}).get("running") or {}).get("startedAt") or "")
        for cs in status.get("containerStatuses") or []
    ]
    if not started or not all(started):  # a container not running: the crash gate's business
        return False
    return bool(changed and ready.get("reason") and changed > max(started))
