"""Conditions keep lastTransitionTime while their status holds; events only on change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edgemodel_operator.api.accelerators import parse_profiles
from edgemodel_operator.api.conditions import (
    get_condition,
    parse_timestamp,
    set_condition,
    timestamp,
)
from edgemodel_operator.reconcile.status import EventSpec, events_for

T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)


def test_transition_time_moves_only_with_status() -> None:
    one = set_condition([], "Ready", False, "TargetsNotReady", "waiting", 1, T0)
    two = set_condition(one, "Ready", False, "NoMatchingNodes", "none", 2, T1)
    three = set_condition(two, "Ready", True, "AllTargetsReady", "ok", 2, T1)
    assert get_condition(two, "Ready") == {
        "type": "Ready", "status": "False", "reason": "NoMatchingNodes", "message": "none",
        "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    assert get_condition(three, "Ready")["lastTransitionTime"] == "2026-01-02T00:00:00Z"  # type: ignore[index]


def status(ready: str, degraded: str, reason: str) -> dict[str, object]:
    return {
        "conditions": [
            {"type": "Ready", "status": ready, "reason": "R", "message": "m"},
            {"type": "Degraded", "status": degraded, "reason": reason, "message": "why"},
        ]
    }


def test_events_for_transitions() -> None:
    fine = status("True", "False", "AsExpected")
    broken = status("False", "True", "NoMatchingNodes")
    assert events_for(fine, fine) == []
    assert events_for({}, fine) == [EventSpec("Normal", "Ready", "m")]
    assert events_for(fine, broken) == [EventSpec("Warning", "NoMatchingNodes", "why")]
    assert events_for(broken, fine) == [
        EventSpec("Normal", "Recovered", "No longer degraded (NoMatchingNodes)"),
        EventSpec("Normal", "Ready", "m"),
    ]


@pytest.mark.parametrize(
    "raw",
    [{"gpu": 3}, {"tpu": {}}, {"npu": {"resource": "npu"}}, {"cpu": {"nodeSelector": {}}}, []],
)
def test_bad_accelerator_mapping_is_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_profiles(raw)


def test_a_timestamp_reads_back_as_the_time_it_was_written() -> None:
    now = datetime(2026, 12, 3, 13, 55, 7, 123456, tzinfo=UTC)
    assert parse_timestamp(timestamp(now)) == datetime(2026, 12, 3, 13, 55, 7)
    assert timestamp(parse_timestamp("2026-02-28T23:59:59Z")) == "2026-02-28T23:59:59Z"
