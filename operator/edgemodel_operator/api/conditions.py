"""KEP-1623 conditions: types, reasons, and a setter that keeps lastTransitionTime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
ROLLED_BACK_TYPE = "RolledBack"
IMAGES_READY = "ImagesReady"
VALIDATED = "Validated"  # the accuracy gate of spec.model.validation ran and passed

# Reasons (CamelCase, stable: users alert on them).
ALL_TARGETS_READY = "AllTargetsReady"
TARGETS_NOT_READY = "TargetsNotReady"
ROLLING_OUT = "RollingOut"
ROLLED_OUT = "RolledOut"
AS_EXPECTED = "AsExpected"
NO_MATCHING_NODES = "NoMatchingNodes"
FELL_BACK = "FellBack"
UNSCHEDULABLE = "Unschedulable"
NODES_UNAVAILABLE = "NodesUnavailable"
NODES_HELD_BACK = "NodesHeldBack"  # nodes failed within the success threshold
NO_IMAGE_FOR_ARCHITECTURE = "NoImageForArchitecture"
INVALID_SPEC = "InvalidSpec"
ROLLED_BACK = "RolledBack"
HELD = "Held"
STABILIZING = "Stabilizing"
BUILDING = "Building"
IMAGES_BUILT = "ImagesBuilt"
GATE_PASSED = "GatePassed"
NO_SAMPLES = "NoSamples"
NOT_MEASURED = "NotMeasured"
ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"  # Prometheus gave no answer: the rollout holds
MODEL_SIGNATURE_INVALID = "ModelSignatureInvalid"  # the publisher's signature did not hold
IMAGE_SIGNATURE_INVALID = "ImageSignatureInvalid"  # a built image failed verification


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(stamp: str) -> datetime:
    """The inverse of timestamp(), without a time zone (strptime costs ten times more, and a
    thousand models' passes read several stamps each)."""
    return datetime.fromisoformat(stamp).replace(tzinfo=None)


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Return conditions with type_ set; lastTransitionTime moves only when status changes."""
    value = "True" if status else "False"
    old = get_condition(conditions, type_)
    if old is not None and old.get("status") == value and old.get("lastTransitionTime"):
        since = str(old["lastTransitionTime"])
    else:
        since = timestamp(now)
    new = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }
    out = [dict(c) for c in conditions if c.get("type") != type_]
    out.append(new)
    order = {READY: 0, PROGRESSING: 1, DEGRADED: 2, ROLLED_BACK_TYPE: 3, IMAGES_READY: 4}
    return sorted(out, key=lambda c: (order.get(c["type"], 9), c["type"]))
