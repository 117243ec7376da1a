"""A pass's Events are named by the status it decided from: one repeated after its status
write was lost names the same Events (the API server refuses the copies), even when the
spec changed meanwhile; a pass on a new status names new ones."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from kubernetes.client import ApiException

from edgemodel_operator.handlers.passes import decided_from, publish
from edgemodel_operator.reconcile.plan import Pass
from edgemodel_operator.reconcile.status import EventSpec


class Recorder:
    """Like the API server: an Event whose name exists is refused."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def post(self, owner: dict[str, Any], key: str, type_: str, reason: str, message: str) -> bool:
        name = f"{owner['name']}.{key}.{reason}.{message}"
        if name in self.names:
            return False
        self.names.append(name)
        return True


class Metrics:
    def __init__(self) -> None:
        self.counted: list[str] = []

    def count(self, name: str, _help: str, **labels: str) -> None:
        self.counted.append(labels.get("reason", ""))


def body(resource_version: str, generation: int, status: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "edgeai.dev/v1alpha1", "kind": "EdgeModel",
            "metadata": {"name": "detector", "namespace": "shop", "uid": "u-1",
                         "resourceVersion": resource_version, "generation": generation},
            "spec": {}, "status": status}  # fmt: skip


WAITING = EventSpec("Warning", "NotReady", "Waiting for cpu 2/2 ready")


def pass_with(*events: EventSpec) -> Pass:
    return Pass(status={}, events=list(events), action="RollForward")


def test_a_pass_repeated_on_a_lost_status_write_posts_nothing_new() -> None:
    recorder, metrics = Recorder(), Metrics()
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    first = body("10", 2, ready)
    publish(kopf.Body(first), pass_with(WAITING), metrics, recorder, decided_from(first))
    # The status write failed (API server restarting); the user changed the spec meanwhile.
    again = body("14", 3, ready)
    publish(kopf.Body(again), pass_with(WAITING), metrics, recorder, decided_from(again))
    assert len(recorder.names) == 1
    assert metrics.counted == ["NotReady"], "counted once"


def test_a_pass_on_a_new_status_posts_its_events() -> None:
    recorder, metrics = Recorder(), Metrics()
    before = body("10", 2, {"conditions": [{"type": "Ready", "status": "True"}]})
    publish(kopf.Body(before), pass_with(WAITING), metrics, recorder, decided_from(before))
    after = body("11", 2, {"conditions": [{"type": "Ready", "status": "False"}]})
    publish(kopf.Body(after), pass_with(WAITING), metrics, recorder, decided_from(after))
    assert len(recorder.names) == 2


class Failing(Recorder):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def post(self, owner: dict[str, Any], key: str, type_: str, reason: str, message: str) -> bool:
        raise self.error


def test_an_event_the_api_server_could_not_take_now_fails_the_pass_for_a_retry() -> None:
    first = body("7", 2, {"phase": "Progressing"})
    with pytest.raises(ConnectionError):
        publish(kopf.Body(first), pass_with(WAITING), Metrics(), Failing(ConnectionError()),
                decided_from(first))  # fmt: skip
    with pytest.raises(ApiException):
        publish(kopf.Body(first), pass_with(WAITING), Metrics(),
                Failing(ApiException(status=503)), decided_from(first))  # fmt: skip


def test_an_event_refused_for_good_is_given_up_not_the_pass() -> None:
    first = body("7", 2, {"phase": "Progressing"})
    metrics = Metrics()
    publish(kopf.Body(first), pass_with(WAITING), metrics, Failing(ApiException(status=403)),
            decided_from(first))  # fmt: skip
    assert metrics.counted == ["NotReady"]
