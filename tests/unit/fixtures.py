"""Small builders shared by the unit tests: nodes of the default fleet and spec dicts."""

from __future__ import annotations

from typing import Any

SHA = "3b5d5c3712955042212316173ccf37be800d0a4bf2c6e8d1c0a7f3dd0c6b0f5e"


def node(name: str, accelerator: str, arch: str = "amd64", **extra: Any) -> dict[str, Any]:
    allocatable = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    taints: list[dict[str, str]] = []
    if accelerator == "gpu":
        allocatable["nvidia.com/gpu"] = "1"
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    if accelerator == "npu":
        allocatable["edgeai.dev/npu"] = "1"
    return {
        "metadata": {
            "name": name,
            "labels": {"edgeai.dev/accelerator": accelerator, "kubernetes.io/arch": arch,
                       **extra.get("labels", {})},
        },
        "spec": {"taints": taints, **extra.get("spec", {})},
        "status": {"allocatable": allocatable},
    }  # fmt: skip


FLEET = [
    node("gpu-0", "gpu", "arm64"),
    node("gpu-1", "gpu", "arm64"),
    node("npu-0", "npu"),
    node("cpu-0", "cpu"),
    node("cpu-1", "cpu"),
]


def spec(*targets: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": {"uri": "file:///models/digits/1.0.0/model.onnx", "sha256": SHA,
                  "version": "1.0.0"},
        "targets": list(targets) or [{"name": "cpu", "accelerator": "cpu"}],
        **extra,
    }  # fmt: skip


def edgemodel(name: str = "digits", **spec_extra: Any) -> dict[str, Any]:
    targets = spec_extra.pop("targets", [])
    return {
        "apiVersion": "edgeai.dev/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name, "namespace": "line-3", "uid": "uid-1", "generation": 1},
        "spec": spec(*targets, **spec_extra),
    }
