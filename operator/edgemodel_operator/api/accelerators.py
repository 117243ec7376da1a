"""How an accelerator maps onto nodes: a node selector, an extended resource, tolerations.

The defaults follow the fleet labels `edgeai.dev/accelerator=gpu|npu|cpu`; operators of
clusters labeled by Node Feature Discovery or the GPU Operator override them in config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator.api.names import ACCELERATOR_LABEL, GROUP

ACCELERATORS = ("gpu", "npu", "cpu")


@dataclass(frozen=True)
class AcceleratorProfile:
    node_selector: Mapping[str, str]
    resource: str | None = None  # extended resource requested once per pod, e.g. nvidia.com/gpu
    tolerations: tuple[Mapping[str, Any], ...] = field(default=())
    runtime_class: str | None = None  # RuntimeClass its pods need, e.g. nvidia


DEFAULT_PROFILES: Mapping[str, AcceleratorProfile] = {
    "gpu": AcceleratorProfile(
        node_selector={ACCELERATOR_LABEL: "gpu"},
        resource="nvidia.com/gpu",
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        runtime_class="nvidia",  # what the GPU Operator and K3s name the NVIDIA runtime
    ),
    "npu": AcceleratorProfile(node_selector={ACCELERATOR_LABEL: "npu"}, resource=f"{GROUP}/npu"),
    "cpu": AcceleratorProfile(node_selector={ACCELERATOR_LABEL: "cpu"}),
}


def _str_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{what} must be a map of strings to strings")
    return dict(value)


def parse_profiles(raw: Any) -> dict[str, AcceleratorProfile]:
    """Merge {"gpu": {"nodeSelector": ..., "resource": ..., "tolerations": [...]}} over the
    defaults; a key left out keeps its default. Raises ValueError on a bad shape."""
    if not isinstance(raw, Mapping):
        raise ValueError("the accelerator mapping must be an object keyed by accelerator")
    profiles = dict(DEFAULT_PROFILES)
    for name, entry in raw.items():
        if name not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {name!r}; expected one of gpu, npu, cpu")
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"{name} must be an object with nodeSelector, resource, tolerations, "
                "runtimeClassName"
            )
        unknown = set(entry) - {"nodeSelector", "resource", "tolerations", "runtimeClassName"}
        if unknown:
            raise ValueError(f"{name} has unknown keys {sorted(unknown)}")
        base = profiles[name]
        selector = base.node_selector
        if "nodeSelector" in entry:
            selector = _str_map(entry["nodeSelector"], f"{name}.nodeSelector")
            if not selector:
                raise ValueError(f"{name}.nodeSelector must not be empty")
        resource = entry.get("resource", base.resource)
        if resource is not None and (not isinstance(resource, str) or "/" not in resource):
            raise ValueError(f"{name}.resource must be an extended resource name like vendor/x")
        tolerations = entry.get("tolerations", list(base.tolerations))
        if not isinstance(tolerations, list) or not all(
            isinstance(t, Mapping) for t in tolerations
        ):
            raise ValueError(f"{name}.tolerations must be a list of toleration objects")
        runtime_class = entry.get("runtimeClassName", base.runtime_class)
        if runtime_class is not None and not isinstance(runtime_class, str):
            raise ValueError(f"{name}.runtimeClassName must be a RuntimeClass name")
        profiles[name] = AcceleratorProfile(
            node_selector=selector,
            resource=resource or None,
            tolerations=tuple(dict(t) for t in tolerations),
            runtime_class=runtime_class or None,
        )
    return profiles
