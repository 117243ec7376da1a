"""Rollout as data: which revision to run, decided from status and what the pods report.

A new revision rolls forward; it is promoted to stable once every target has been fully
Ready for a stabilization window; a gate failing (crash loops, readiness lost, the progress
deadline passed) rolls back to the stable revision, or holds when there is none. A failed
revision is remembered and not retried until the spec asks for another one.

Per-node targets may have a success threshold below 100 %: nodes failing within what it
allows are held back on the stable revision (and reported), the rest of the fleet goes on.
Unavailable nodes (offline, cordoned) are left out of every count."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from edgemodel_operator.api.conditions import ANALYSIS_INCONCLUSIVE, timestamp
from edgemodel_operator.api.names import REVISION_ANNOTATION
from edgemodel_operator.reconcile.probes import probe_failure

MAX_FAILED_REMEMBERED = 10
MAX_EVIDENCE = 5
CRASH_REASONS = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerError")


class Action(Enum):
    ROLL_FORWARD = "RollForward"  # apply the new revision and wait for it
    PROMOTE = "Promote"  # the new revision passed every gate: it becomes stable
    STEADY = "Steady"  # the stable revision is what the spec asks for
    ROLL_BACK = "RollBack"  # a gate failed just now: restore the stable revision
    HOLD_STABLE = "HoldStable"  # the asked-for revision failed before: keep the stable one
    HOLD = "Hold"  # it failed and there is no healthy revision to go back to


@dataclass(frozen=True)
class FailedRevision:
    revision: str
    reason: str
    message: str
    failed_at: str


@dataclass(frozen=True)
class Evidence:
    """What one pod shows, and the node it is on ("" before it is scheduled)."""

    node: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class HeldNode:
    """A node that failed the rollout within the success threshold: it stays on (or goes
    back to) the stable revision while the rest of the fleet moves on."""

    target: str
    node: str
    reason: str  # the gate it failed: CrashLooping, ProbeFailed, ReadinessLost, ...
    evidence: str
    since: str


@dataclass(frozen=True)
class RolloutState:
    """What status remembers between reconciles (and across operator restarts)."""

    revision: str | None = None  # the revision last rolled out
    started_at: str | None = None  # when that rollout began
    ready_since: str | None = None  # since when every target has been fully Ready
    stable_revision: str | None = None
    stable_spec: Mapping[str, Any] | None = None
    failed: tuple[FailedRevision, ...] = ()
    wave: int = 0  # the wave under way, for perNode targets rolled out in waves
    wave_started_at: str | None = None  # the progress deadline counts per wave
    paused_at: str | None = None  # since when a target's nodes are all unavailable
    held: tuple[HeldNode, ...] = ()  # nodes failing within the success threshold
    completed_at: str | None = None  # when the revision was promoted

    def failure(self, revision: str) -> FailedRevision | None:
        return next((f for f in self.failed if f.revision == revision), None)


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


@dataclass(frozen=True)
class Policy:
    progress_deadline_seconds: int
    stabilization_seconds: int  # a promoted revision was Ready at least this long
    auto_rollback: bool
    failure_threshold: int  # restarts that count as a crash loop
    success_threshold: int = 100  # percent of a wave's available nodes that must succeed


@dataclass(frozen=True)
class Plan:
    action: Action
    apply_revision: str  # whose workloads to apply: the spec's or the stable one
    state: RolloutState
    reason: str = ""
    message: str = ""
    evidence: tuple[str, ...] = field(default_factory=tuple)
    # For a failed gate: the nodes of every pod in its evidence, or None where the failure
    # is not one of pods on known nodes (the deadline, the analysis, an unscheduled pod).
    evidence_nodes: frozenset[str] | None = None
    # No target allows a failing node (a success threshold of 100 %): the evidence on any
    # one of those nodes fails the rollout by itself.
    one_node_fails: bool = False


def _since(now: datetime, stamp: str | None) -> float:
    if not stamp:
        return 0.0
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=now.tzinfo)
    return (now - then).total_seconds()


def _shift(stamp: str | None, seconds: float) -> str | None:
    if not stamp:
        return stamp
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    return (then + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pause_or_resume(
    revision: str, state: RolloutState, health: Sequence[TargetHealth], now: datetime
) -> tuple[RolloutState, Plan | None]:
    """While a target's every node is unavailable the rollout waits, gates and deadline
    included: an outage is not a failed version. Once the nodes are back, the deadline is
    pushed back by the time they were away."""
    stamp = timestamp(now)
    blocked = [f"{h.name}: {h.blocked}" for h in health if h.blocked]
    if blocked:
        paused = replace(state, paused_at=state.paused_at or stamp, ready_since=None)
        message = "Waiting for nodes to come back; " + "; ".join(blocked)
        return paused, Plan(Action.ROLL_FORWARD, revision, paused, "NodesUnavailable", message)
    if state.paused_at:
        away = _since(now, state.paused_at)
        state = replace(state, paused_at=None, started_at=_shift(state.started_at, away),
                        wave_started_at=_shift(state.wave_started_at, away))  # fmt: skip
    return state, None


# The gates evidence can fail, in the order they are checked: reason, what the pods did,
# the TargetHealth field holding the evidence.
GATES = (
    ("CrashLooping", "crash-looping", "crashing"),
    ("ProbeFailed", "failed the active probe", "probe_failed"),
    ("ReadinessLost", "stopped being Ready", "lost"),
)
DEADLINE = "ProgressDeadlineExceeded"


def _deadline_passed(policy: Policy, state: RolloutState, now: datetime) -> bool:
    return _since(now, state.wave_started_at or state.started_at) > policy.progress_deadline_seconds


def hold_back(
    health: Sequence[TargetHealth], policy: Policy, state: RolloutState, now: datetime
) -> tuple[RolloutState, list[TargetHealth]]:
    """Hold back the failing nodes of targets whose success threshold allows them (those
    past the deadline included), so that the gates judge the rest; a target with more
    failing nodes than allowed is left as it is and fails its gate."""
    late = _deadline_passed(policy, state, now)
    held = list(state.held)
    judged = []
    for h in health:
        h = h.without(h.held)  # a held node's leftover pods do not count
        if h.allowed_failures <= 0:
            judged.append(h)
            continue
        failing: dict[str, tuple[str, str]] = {}
        for reason, _, field_ in GATES:
            for e in getattr(h, field_):
                if e.node and e.node not in h.held:
                    failing.setdefault(e.node, (reason, e.text))
        if late:
            for e in h.not_ready:
                if e.node and e.node not in h.held:
                    failing.setdefault(e.node, (DEADLINE, f"{e.text}: not Ready in time"))
        if not failing or len(h.held) + len(failing) > h.allowed_failures:
            judged.append(h)
            continue
        stamp = timestamp(now)
        held += [HeldNode(h.name, node, reason, text[:300], stamp)
                 for node, (reason, text) in sorted(failing.items())]  # fmt: skip
        judged.append(h.without(frozenset(failing)))
    return replace(state, held=tuple(held)), judged


Failure = tuple[str, str, tuple[str, ...], frozenset[str] | None]


def gate_failure(
    health: Sequence[TargetHealth], policy: Policy, state: RolloutState, now: datetime
) -> Failure | None:
    """The first failing gate as (reason, message, evidence, the evidence's nodes), or None
    while all pass."""
    for reason, what, field_ in GATES:
        pods = [(h.name, e) for h in health for e in getattr(h, field_)]
        if pods:
            found = tuple(f"{target}: {e}" for target, e in pods[:MAX_EVIDENCE])
            nodes = {e.node for _, e in pods}
            return reason, f"{len(pods)} pod(s) {what}", found, (
                None if "" in nodes else frozenset(nodes))  # fmt: skip
    analysed = [f"{h.name}: {a}" for h in health for a in h.analysis_failed]
    if analysed:  # per target, not per node: no node is held back for it
        return "AnalysisFailed", f"analysis failed: {analysed[0]}", tuple(analysed), None
    if _deadline_passed(policy, state, now) and not all(h.healthy for h in health):
        stuck = [f"{h.name}: {p}" for h in health for p in h.not_ready][:MAX_EVIDENCE]
        short = [f"{h.name} {h.ready}/{h.desired} Ready" for h in health if not h.healthy]
        message = (
            f"not Ready within the {policy.progress_deadline_seconds}s progress deadline "
            f"({', '.join(short)})"
        )
        return DEADLINE, message, tuple(stuck), None
    return None


def decide(
    revision: str,
    spec: Mapping[str, Any],
    state: RolloutState,
    health: Sequence[TargetHealth],
    policy: Policy,
    now: datetime,
) -> Plan:
    """Choose what to run. `health` describes the pods of `revision` (the spec's)."""
    stamp = timestamp(now)
    failed = state.failure(revision)
    has_stable = state.stable_revision is not None and state.stable_revision != revision
    if failed is not None:
        if has_stable and policy.auto_rollback:
            return Plan(Action.HOLD_STABLE, state.stable_revision or revision, state,
                        failed.reason, failed.message)  # fmt: skip
        # Held in place: should it become healthy after all (a GPU freed up), it recovers.
        unsure = any(h.analysis_failed or h.analysis_pending for h in health)
        if health and all(h.healthy and h.final for h in health) and not unsure:
            ready_since = state.ready_since or stamp
            if _since(now, ready_since) >= policy.stabilization_seconds:
                cleared = tuple(f for f in state.failed if f.revision != revision)
                promoted = replace(state, failed=cleared, stable_revision=revision,
                                   stable_spec=spec, ready_since=ready_since)  # fmt: skip
                return Plan(Action.PROMOTE, revision, promoted)
            state = replace(state, ready_since=ready_since)
        else:
            state = replace(state, ready_since=None)
        return Plan(Action.HOLD, revision, state, failed.reason, failed.message)

    if revision == state.stable_revision:
        steady = replace(state, revision=revision, stable_spec=spec)
        return Plan(Action.STEADY, revision, steady)

    if state.revision != revision:  # a new rollout starts now; held nodes get another chance
        state = replace(state, revision=revision, started_at=stamp, ready_since=None, wave=0,
                        wave_started_at=None, paused_at=None, held=(),
                        completed_at=None)  # fmt: skip

    state, waiting = _pause_or_resume(revision, state, health, now)
    if waiting is not None:
        return waiting

    before = len(state.held)
    state, health = hold_back(health, policy, state, now)
    if len(state.held) > before:
        fresh = state.held[before:]
        message = (f"{len(fresh)} node(s) failed within the success threshold and are held "
                   "back on the stable revision; the rest of the rollout goes on")  # fmt: skip
        evidence = tuple(f"{x.target}: {x.evidence}" for x in fresh[:MAX_EVIDENCE])
        return Plan(Action.ROLL_FORWARD, revision, replace(state, ready_since=None), "HeldBack",
                    message, evidence)  # fmt: skip

    failure = gate_failure(health, policy, state, now)
    if failure is not None:
        reason, message, evidence, nodes = failure
        remembered = FailedRevision(revision, reason, message, stamp)
        failed_list = (*state.failed, remembered)[-MAX_FAILED_REMEMBERED:]
        after = replace(state, failed=failed_list, ready_since=None, held=())
        if has_stable and policy.auto_rollback:
            strict = all(h.allowed_failures <= 0 for h in health)
            return Plan(Action.ROLL_BACK, state.stable_revision or revision, after,
                        reason, message, evidence, nodes, strict)  # fmt: skip
        return Plan(Action.HOLD, revision, after, reason, message, evidence)

    if not all(h.healthy for h in health):
        return Plan(Action.ROLL_FORWARD, revision, replace(state, ready_since=None))
    ready_since = state.ready_since or stamp
    state = replace(state, ready_since=ready_since)
    pending = [f"{h.name}: {p}" for h in health for p in h.analysis_pending]
    if _since(now, ready_since) >= policy.stabilization_seconds and pending:
        return Plan(Action.ROLL_FORWARD, revision, state, ANALYSIS_INCONCLUSIVE,
                    "Holding: the analysis has no answer; " + "; ".join(pending))  # fmt: skip
    if _since(now, ready_since) >= policy.stabilization_seconds and not all(
        h.final for h in health
    ):
        wave = state.wave + 1
        after = replace(state, wave=wave, wave_started_at=stamp, ready_since=None)
        return Plan(Action.ROLL_FORWARD, revision, after, "NextWave",
                    f"Wave {wave} passed its gates; starting wave {wave + 1}")  # fmt: skip
    if _since(now, ready_since) >= policy.stabilization_seconds:
        promoted = replace(state, stable_revision=revision, stable_spec=spec, completed_at=stamp)
        return Plan(Action.PROMOTE, revision, promoted)
    return Plan(Action.ROLL_FORWARD, revision, state)


RECHECK_MARGIN_S = 0.1


def next_check(plan: Plan, policy: Policy, now: datetime) -> float | None:
    """Seconds until a time-based gate falls due (the progress deadline, the end of the
    stabilization window), so that the worker looks again then and not at its next
    resync: no watch event marks a deadline passing. None: nothing is due."""
    if plan.action not in (Action.ROLL_FORWARD, Action.HOLD):
        return None
    state = plan.state
    due = []
    if plan.action is Action.ROLL_FORWARD and not state.paused_at:
        started = state.wave_started_at or state.started_at
        if started:
            due.append(policy.progress_deadline_seconds - _since(now, started))
    if state.ready_since:
        due.append(policy.stabilization_seconds - _since(now, state.ready_since))
    # The deadline passes only once strictly past, and a timer may fire a little early.
    ahead = [d + RECHECK_MARGIN_S for d in due if d + RECHECK_MARGIN_S > 0]
    return min(ahead) if ahead else None


# --- reading pods and status --------------------------------------------------------------


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


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
        lost=tuple(_where(p) for p in not_ready if _lost(p, ready_since)),
    )


def _lost(pod: Mapping[str, Any], ready_since: str | None) -> bool:
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


def state_from_status(status: Mapping[str, Any]) -> RolloutState:
    rollout = status.get("rollout") or {}
    stable = status.get("stable") or {}
    return RolloutState(
        revision=rollout.get("revision"),
        started_at=rollout.get("startedAt"),
        ready_since=rollout.get("readySince"),
        wave=max(0, int(rollout.get("wave", 1)) - 1),
        wave_started_at=rollout.get("waveStartedAt"),
        paused_at=rollout.get("pausedAt"),
        completed_at=rollout.get("completedAt"),
        held=tuple(
            HeldNode(h.get("target", ""), h.get("node", ""), h.get("reason", ""),
                     h.get("evidence", ""), h.get("since", ""))
            for h in rollout.get("heldNodes") or []
        ),
        stable_revision=stable.get("revision"),
        stable_spec=stable.get("spec"),
        failed=tuple(
            FailedRevision(
                f.get("revision", ""), f.get("reason", ""), f.get("message", ""),
                f.get("failedAt", ""),
            )
            for f in status.get("failedRevisions") or []
        ),
    )  # fmt: skip


def state_to_status(state: RolloutState) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rollout": {
            k: v
            for k, v in {
                "revision": state.revision,
                "startedAt": state.started_at,
                "readySince": state.ready_since,
                "wave": state.wave + 1 if state.wave_started_at else None,
                "waveStartedAt": state.wave_started_at,
                "pausedAt": state.paused_at,
                "completedAt": state.completed_at,
                "heldNodes": [
                    {"target": h.target, "node": h.node, "reason": h.reason,
                     "evidence": h.evidence, "since": h.since}
                    for h in state.held
                ],
            }.items()
            if v
        },
        "failedRevisions": [
            {"revision": f.revision, "reason": f.reason, "message": f.message,
             "failedAt": f.failed_at}
            for f in state.failed
        ],
    }  # fmt: skip
    if state.stable_revision:
        out["stableRevision"] = state.stable_revision
        out["stable"] = {
            "revision": state.stable_revision,
            "spec": copy.deepcopy(dict(state.stable_spec or {})),
        }
    return out
