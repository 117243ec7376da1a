"""Events about EdgeModels, each posted at most once.

An Event's name is derived from what it says and from the state the pass decided from (the
EdgeModel's status, handlers/passes.py). A pass repeated from the same state (a stale cache,
an operator killed after posting but before its status write landed, a status write lost
to an API server restart while the spec changed) names the same Event, and the API server
refuses the second copy (409), so a user sees every happening once."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from edgemodel_operator.adapters.rest import Rest, path

COMPONENT = "edgemodel-operator"


def event_name(owner: Mapping[str, Any], key: str, type_: str, reason: str, message: str) -> str:
    text = "\0".join([str(owner["uid"]), key, type_, reason, message])
    return f"{owner['name']}.{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class EventRecorder:
    def __init__(self, api: client.ApiClient, timeout: tuple[float, float]) -> None:
        self._rest = Rest(api, timeout)
        self._instance = socket.gethostname()

    def post(self, owner: Mapping[str, Any], key: str, type_: str, reason: str,
             message: str) -> bool:  # fmt: skip
        """Post the Event; False when this very Event was posted before."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": event_name(owner, key, type_, reason, message),
                         "namespace": owner["namespace"]},
            "involvedObject": {k: owner[k] for k in ("apiVersion", "kind", "name", "namespace",
                                                     "uid")},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }  # fmt: skip
        try:
            self._rest.send("POST", path("", "v1", "events", owner["namespace"]), body)
        except client.ApiException as err:
            if err.status == 409:
                return False
            raise
        return True
