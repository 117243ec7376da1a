"""What placement needs to know about a node, read from the Node object as a dict."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from edgemodel_operator.api.names import TARGET_LABEL

# Taints the node controller keeps on a node it thinks is down.
CONTROLLER_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    allocatable: Mapping[str, str] = field(default_factory=dict)
    schedulable: bool = True
    unavailable: str = ""  # why nothing can run there now (cordoned, NotReady); "" if it can

    @property
    def settling(self) -> bool:
        """Back up, but the node controller has not seen it yet: until its next monitor
        pass (5 s by default) lifts these taints, it marks any pod bound there NotReady."""
        return any(t.get("key") in CONTROLLER_TAINTS for t in self.taints)


def without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def packed(obj: Mapping[str, Any]) -> Packed:
    """The object without its managedFields, kept whole as compact JSON: what the indices
    hold of a model's workloads and Services. A pass reads its own few and decodes them
    once; as text they take 40 to 65 % of their decoded size (measured on the footprint's
    Deployments and Services: 4.9 against 7.8 KiB and 1.2 against 3.0 KiB)."""
    return Packed(without_managed_fields(obj))


def lean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object without its managedFields (often half its size), for what is kept in
    memory and read often: the pods' and nodes' indices, the models, the operator's own
    recent writes. A compact copy: thousands of pods and workloads repeat the same keys,
    labels and condition values, which decoding gives each its own string; shared, they
    take about 40 % less (measured on the footprint's children). A workload's pod template
    spec is kept packed (Packed)."""
    kept = without_managed_fields(obj)
    spec = obj.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if isinstance(template, Mapping) and isinstance(template.get("spec"), Mapping):
        kept["spec"] = {**obj["spec"], "template": {**template, "spec": Packed(template["spec"])}}
    return _compact(kept)  # type: ignore[no-any-return]


class Packed(Mapping[str, Any]):
    """A mapping kept as compact JSON text, decoded where it is read. A workload's pod
    template spec is two thirds of what the index holds of it (its containers, probes and
    the API server's defaults) and is read only to check drift and the running image."""

    __slots__ = ("_text",)

    def __init__(self, value: Mapping[str, Any]) -> None:
        self._text = _ENCODE(value)

    def decoded(self) -> dict[str, Any]:
        return json.loads(self._text)  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        return self.decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.decoded())

    def __len__(self) -> int:
        return len(self.decoded())

    def __repr__(self) -> str:
        return f"Packed({self._text})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Packed, (self.decoded(),))


def _plain(value: Any) -> Any:
    if isinstance(value, Packed):
        return value.decoded()
    raise TypeError(f"{type(value).__name__} is not JSON")


# One encoder for every Packed (json.dumps with options builds one per call).
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=_plain, check_circular=False).encode

SHARED_STRING_MAX = 64  # longer strings (messages, JSON in annotations) are rarely repeated


def _compact(value: Any) -> Any:
    """A copy with its keys and short strings interned (one object per distinct string)."""
    if type(value) is Packed:
        return value
    if isinstance(value, Mapping):
        return {sys.intern(str(k)): _compact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_compact(v) for v in value]
    if type(value) is str and len(value) <= SHARED_STRING_MAX:
        return sys.intern(value)
    return value


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
    """The node as placement reads it; remembered per resourceVersion, since every pass of
    every model reads every node and a node rarely changes."""
    meta = node.get("metadata") or {}
    key = (str(meta.get("name", "")), str(meta.get("resourceVersion", "")))
    if key[1] and (known := _NODE_INFO.get(key)) is not None:
        return known
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    info = NodeInfo(
        unavailable=_unavailable(spec, status),
        name=key[0],
        labels=dict(meta.get("labels") or {}),
        taints=tuple(spec.get("taints") or ()),
        allocatable={str(k): str(v) for k, v in (status.get("allocatable") or {}).items()},
        schedulable=not spec.get("unschedulable", False),
    )
    if key[1]:
        if len(_NODE_INFO) >= _NODE_INFO_MAX:  # old versions of changed nodes: start over
            _NODE_INFO.clear()
        _NODE_INFO[key] = info
    return info


_NODE_INFO: dict[tuple[str, str], NodeInfo] = {}
_NODE_INFO_MAX = 50_000


@dataclass(frozen=True)
class Observed:
    """What the cluster holds, as plain dicts (from kopf's watch-fed indices): every node,
    and this model's children (each with its "kind") and pods."""

    nodes: Sequence[Mapping[str, Any]]
    children: Sequence[Mapping[str, Any]]
    pods: Sequence[Mapping[str, Any]]

    @cached_property
    def _pods_by_target(self) -> dict[str, list[Mapping[str, Any]]]:
        grouped: dict[str, list[Mapping[str, Any]]] = {}
        for pod in self.pods:
            target = ((pod.get("metadata") or {}).get("labels") or {}).get(TARGET_LABEL)
            grouped.setdefault(str(target), []).append(pod)
        return grouped

    def pods_of(self, target: str) -> list[Mapping[str, Any]]:
        """The pods of one target (grouped once: a perNode target has a pod per node)."""
        return list(self._pods_by_target.get(target, ()))

    def child(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return next(
            (c for c in self.children if c["kind"] == kind and c["metadata"]["name"] == name),
            None,
        )
