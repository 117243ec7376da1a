"""What placement needs to know about a node, read from the Node object as a dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    allocatable: Mapping[str, str] = field(default_factory=dict)
    schedulable: bool = True
    unavailable: str = ""  # why nothing can run there now (cordoned, NotReady); "" if it can


def _unavailable(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") != "True":
        reason = ready.get("reason") or "NotReady"
        message = str(ready.get("message") or "").strip().rstrip(".")
        return f"{reason}: {message}" if message else str(reason)
    if spec.get("unschedulable", False):
        return "cordoned"
    return ""


def node_info(node: Mapping[str, Any]) -> NodeInfo:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    return NodeInfo(
        unavailable=_unavailable(spec, status),
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        taints=tuple(spec.get("taints") or ()),
        allocatable={str(k): str(v) for k, v in (status.get("allocatable") or {}).items()},
        schedulable=not spec.get("unschedulable", False),
    )


@dataclass(frozen=True)
class Observed:
    """What the cluster holds, as plain dicts (from kopf's watch-fed indices): every node,
    and this model's children (each with its "kind"), pods and EndpointSlices."""

    nodes: Sequence[Mapping[str, Any]]
    children: Sequence[Mapping[str, Any]]
    pods: Sequence[Mapping[str, Any]]
    endpoint_slices: Sequence[Mapping[str, Any]] = ()

    def child(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return next(
            (c for c in self.children if c["kind"] == kind and c["metadata"]["name"] == name),
            None,
        )
