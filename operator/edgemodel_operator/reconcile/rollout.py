"""Rollout as data: which revision to run, decided from status and what the pods report.

A new revision rolls forward; it is promoted to stable once every target has been fully
Ready for a stabilization window; a gate failing (crash loops, readiness lost, the progress
deadline passed) rolls back to the stable revision, or holds when there is none. A failed
revision is remembered and not retried until the spec asks for another one.

Per-node targets may have a success threshold below 100 %: nodes failing within what it
allows are held back on the stable revision (and reported), the rest of the fleet goes on.
Unavailable nodes (offline, cordoned) are left out of every count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from edgemodel_operator.api.conditions import ANALYSIS_INCONCLUSIVE, parse_timestamp, timestamp
from edgemodel_operator.reconcile.health import TargetHealth
from edgemodel_operator.reconcile.rollout_state import FailedRevision, HeldNode, RolloutState

MAX_FAILED_REMEMBERED = 10
MAX_EVIDENCE = 5


class Action(Enum):
    ROLL_FORWARD = "RollForward"  # apply the new revision and wait for it
    PROMOTE = "Promote"  # the new revision passed every gate: it becomes stable
    STEADY = "Steady"  # the stable revision is what the spec asks for
    ROLL_BACK = "RollBack"  # a gate failed just now: restore the stable revision
    HOLD_STABLE = "HoldStable"  # the asked-for revision failed before: keep the stable one
    HOLD = "Hold"  # it failed and there is no healthy revision to go back to


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
    then = parse_timestamp(stamp).replace(tzinfo=now.tzinfo)
    return (now - then).total_seconds()


def _shift(stamp: str | None, seconds: float) -> str | None:
    if not stamp:
        return stamp
    return timestamp(parse_timestamp(stamp) + timedelta(seconds=seconds))


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
