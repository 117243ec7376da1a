"""The rollout's part of status: the conditions and Events its decision brings, the
Events of nodes catching up once it is done, and how far it got in what a fleet owner
counts (nodes updated, failed, unavailable)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from edgemodel_operator.api import conditions as c
from edgemodel_operator.reconcile.health import pod_ready, pod_revision
from edgemodel_operator.reconcile.placement import Placement
from edgemodel_operator.reconcile.rollout import Action, Plan
from edgemodel_operator.reconcile.rollout_state import RolloutState, state_to_status
from edgemodel_operator.reconcile.status import EventSpec, TargetObservation, node_counts


def annotate_rollout(
    status: dict[str, Any], plan: Plan, rev: str, generation: int, now: datetime
) -> list[EventSpec]:
    """Fold the rollout decision into the status; return the Events it alone causes."""
    conds = status["conditions"]

    def put(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = c.set_condition(conds, type_, ok, reason, message, generation, now)

    evidence = f" Evidence: {'; '.join(plan.evidence)}." if plan.evidence else ""
    stable = plan.state.stable_revision
    events: list[EventSpec] = []
    if plan.action in (Action.ROLL_BACK, Action.HOLD_STABLE):
        message = (
            f"Revision {rev} failed ({plan.reason}: {plan.message}); rolled back to stable "
            f"revision {stable}, which keeps serving.{evidence}"
        )
        put(c.DEGRADED, True, c.ROLLED_BACK, message)
        put(c.ROLLED_BACK_TYPE, True, plan.reason, message)
        put(c.PROGRESSING, False, c.ROLLED_BACK, f"Revision {rev} will not be retried until "
            "the spec changes")  # fmt: skip
        status["phase"] = "RolledBack"
    elif plan.action is Action.HOLD:
        why = "autoRollback is off" if stable else "there is no healthy revision to go back to"
        message = f"Revision {rev} failed ({plan.message}); holding it because {why}.{evidence}"
        put(c.DEGRADED, True, plan.reason, message)
        put(c.ROLLED_BACK_TYPE, False, c.HELD, message)
        put(c.PROGRESSING, False, c.HELD, message)
        status["phase"] = "Failed"
    else:
        put(c.ROLLED_BACK_TYPE, False, c.AS_EXPECTED, f"Serving revision {rev}")
        if plan.state.held:
            shown = "; ".join(f"{h.node} ({h.target}: {h.reason}: {h.evidence})"
                              for h in plan.state.held[:5])  # fmt: skip
            more = len(plan.state.held) - 5
            put(c.DEGRADED, True, c.NODES_HELD_BACK, f"{len(plan.state.held)} node(s) failed "
                f"revision {rev} within the success threshold and stay on the stable "
                f"revision: {shown}" + (f" and {more} more" if more > 0 else ""))  # fmt: skip
        if plan.reason == "HeldBack":
            events.append(EventSpec("Warning", c.NODES_HELD_BACK, f"{plan.message}.{evidence}"))
        elif plan.reason == "NextWave":
            events.append(EventSpec("Normal", "NextWave", plan.message))
        if plan.action is Action.PROMOTE:
            events.append(EventSpec("Normal", "Promoted", f"Revision {rev} passed its health "
                                    "gates and is now the stable revision"))  # fmt: skip
        elif plan.reason == c.ANALYSIS_INCONCLUSIVE:
            put(c.PROGRESSING, True, c.ANALYSIS_INCONCLUSIVE, f"Rollout of {rev}: {plan.message}")
        elif plan.reason == "NodesUnavailable":
            put(c.PROGRESSING, True, c.NODES_UNAVAILABLE, f"Rollout of {rev} paused: "
                f"{plan.message}")  # fmt: skip
        elif plan.action is Action.ROLL_FORWARD and status["phase"] == "Ready":
            put(c.PROGRESSING, True, c.STABILIZING, f"Revision {rev} is Ready; watching it for "
                "the stabilization window before promoting it to stable")  # fmt: skip
    status["conditions"] = conds
    status.update(state_to_status(plan.state))
    return events


def catch_up_events(
    previous: Mapping[str, Any], status: Mapping[str, Any], revision: str
) -> list[EventSpec]:
    """Once a rollout is done, a node that comes back (it was offline or cordoned) still
    runs an older revision; its pod is replaced. Say so when that starts and ends."""
    before = {t.get("name"): int(t.get("outdated", 0)) for t in previous.get("targets") or []}
    events = []
    for t in status.get("targets") or []:
        was, now = before.get(t["name"], 0), int(t.get("outdated", 0))
        if now and not was:
            events.append(EventSpec("Normal", "CatchingUp", f"Target {t['name']}: {now} node(s) "
                                    f"back online run an older revision; moving them to "
                                    f"{revision}"))  # fmt: skip
        elif was and not now:
            events.append(EventSpec("Normal", "CaughtUp", f"Target {t['name']}: every "
                                    f"available node runs {revision}"))  # fmt: skip
    return events


def rollout_progress(
    placements: Sequence[Placement],
    observed: Mapping[str, TargetObservation],
    revision: str,
    state: RolloutState,
) -> dict[str, Any]:
    """How far the rollout of `revision` got, in what a fleet owner counts: nodes for
    per-node targets (pods when the model has none), updated (on the revision and Ready),
    failed (held back), unavailable (offline or cordoned), and how long it took."""
    per_node = [p for p in placements if p.target.placement == "perNode"]
    total = updated = failed = unavailable = 0
    for p in per_node or placements:
        seen = observed.get(p.target.name, TargetObservation(None))
        if per_node:
            n = node_counts(seen, revision)
            total += n.desired + len(p.unavailable)
            updated, failed = updated + n.updated_ready, failed + n.failed
            unavailable += len(p.unavailable)
        else:
            total += max(p.target.replicas, 1)
            updated += sum(1 for x in seen.pods if pod_revision(x) == revision and pod_ready(x))
    unit = "nodes" if per_node else "pods"
    share = 100.0 * updated / total if total else 0.0
    progress: dict[str, Any] = {
        "unit": unit,
        "total": total,
        "updated": updated,
        "failed": failed,
        "unavailable": unavailable,
        "percent": round(share, 1),
        "summary": f"{updated:,} of {total:,} {unit} updated ({share:.1f} %), "
        f"{unavailable:,} unavailable, {failed:,} failed",
    }
    if state.completed_at and state.started_at and state.revision == revision:
        took = c.parse_timestamp(state.completed_at) - c.parse_timestamp(state.started_at)
        progress["durationSeconds"] = int(took.total_seconds())
    return progress
