"""Leader election on a coordination.k8s.io Lease, as pure decisions (the I/O is in
adapters/leader.py): client-go's rules, so replicas agree without trusting each other's
clocks. A holder's lease is taken over only after it has not changed for its whole
duration as seen by the local clock of the replica that wants it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any


class Move(Enum):
    CREATE = "create"  # no Lease yet
    TAKE = "take"  # free, released, or its holder stopped renewing
    RENEW = "renew"  # ours
    WAIT = "wait"  # another replica leads


@dataclass(frozen=True)
class Observed:
    """The Lease as last read, and when (local monotonic seconds) it last changed."""

    holder: str
    duration_seconds: float
    transitions: int
    version: str  # resourceVersion: any write changes it
    changed_at: float


def observe(spec: Mapping[str, Any] | None, version: str, before: Observed | None,
            now: float) -> Observed | None:  # fmt: skip
    if spec is None:
        return None
    changed_at = before.changed_at if before is not None and before.version == version else now
    return Observed(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        version=version,
        changed_at=changed_at,
    )


def decide(lease: Observed | None, me: str, now: float) -> Move:
    if lease is None:
        return Move.CREATE
    if lease.holder == me:
        return Move.RENEW
    if not lease.holder or now >= lease.changed_at + lease.duration_seconds:
        return Move.TAKE
    return Move.WAIT


def spec_for(lease: Observed | None, me: str, duration: float, now: datetime) -> dict[str, Any]:
    """The Lease spec that makes (or keeps) `me` the holder."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec: dict[str, Any] = {
        "holderIdentity": me,
        "leaseDurationSeconds": max(1, round(duration)),
        "renewTime": stamp,
    }
    if lease is None or lease.holder != me:
        spec["acquireTime"] = stamp
        spec["leaseTransitions"] = (lease.transitions + 1) if lease is not None else 0
    return spec
