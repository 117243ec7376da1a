"""RecentWrites: a pass reads its own writes until the indices catch up, and what is kept
for that stays small (no managedFields, nothing past its time for any model)."""

from __future__ import annotations

from typing import Any

from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.services.recent import RecentWrites

MODEL = ("shop", "digits")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def deployment(name: str, version: str, replicas: int = 1) -> dict[str, Any]:
    return {"kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": version,
                         "managedFields": [{"manager": "edgemodel-operator",
                                            "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
            "spec": {"replicas": replicas}}  # fmt: skip


def observed(*children: dict[str, Any]) -> Observed:
    return Observed(nodes=[], children=list(children), pods=[])


def test_the_pass_sees_its_write_until_the_index_moves_on() -> None:
    recent = RecentWrites(ttl=120.0, clock=Clock())
    indexed = deployment("digits-cpu", "10", replicas=1)
    recent.applied(MODEL, indexed, deployment("digits-cpu", "11", replicas=3))
    seen = recent.overlay(MODEL, observed(indexed)).children
    assert [c["spec"]["replicas"] for c in seen] == [3]
    assert "managedFields" not in seen[0]["metadata"], "the answer is kept lean"
    caught_up = deployment("digits-cpu", "12", replicas=3)
    assert recent.overlay(MODEL, observed(caught_up)).children == [caught_up]
    assert recent.held() == 0


def test_writes_past_their_time_are_dropped_for_every_model() -> None:
    clock = Clock()
    recent = RecentWrites(ttl=120.0, clock=clock)
    for i in range(50):  # settled models: no pass comes back to read these
        recent.applied(("shop", f"m{i}"), None, deployment(f"m{i}-cpu", "5"))
    assert recent.held() == 50
    clock.now += 121
    recent.applied(MODEL, None, deployment("digits-cpu", "7"))
    assert recent.held() == 1, "the other models' old writes went with the next write"
    indexed = observed()  # a new child the index has not shown yet is still seen
    assert [c["metadata"]["name"] for c in recent.overlay(MODEL, indexed).children] == [
        "digits-cpu"
    ]
