"""What a rollout remembers between passes (and across operator restarts), kept in the
EdgeModel's status: the revision under way, the stable one with its spec, the revisions
that failed, the wave and the nodes held back."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FailedRevision:
    revision: str
    reason: str
    message: str
    failed_at: str


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
