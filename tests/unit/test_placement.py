"""place(): the right nodes per accelerator, the selector named when none match, fallback."""

from __future__ import annotations

from typing import Any

from fixtures import FLEET, node

from edgemodel_operator.api.accelerators import DEFAULT_PROFILES, parse_profiles
from edgemodel_operator.api.spec import Target
from edgemodel_operator.reconcile.observed import node_info
from edgemodel_operator.reconcile.placement import place

NODES = [node_info(n) for n in FLEET]


def target(**kw: Any) -> Target:
    return Target(**{"name": "t", "accelerator": "cpu", "precision": "int8", **kw})


def test_each_accelerator_finds_its_nodes() -> None:
    gpu = place(target(accelerator="gpu", precision="fp16"), NODES, DEFAULT_PROFILES)
    assert gpu.nodes == ("gpu-0", "gpu-1")
    assert gpu.resource == "nvidia.com/gpu"
    assert gpu.tolerations[0]["key"] == "nvidia.com/gpu"
    assert place(target(accelerator="npu"), NODES, DEFAULT_PROFILES).nodes == ("npu-0",)
    cpu = place(target(), NODES, DEFAULT_PROFILES)
    assert (cpu.nodes, cpu.message, cpu.fell_back) == (("cpu-0", "cpu-1"), "", False)


def test_taint_without_toleration_keeps_gpu_nodes_out() -> None:
    profiles = parse_profiles({"gpu": {"tolerations": []}})
    placed = place(target(accelerator="gpu", precision="fp16"), NODES, profiles)
    assert placed.nodes == ()


def test_cordoned_node_and_missing_resource_do_not_count() -> None:
    nodes = [
        node_info(node("npu-a", "npu", spec={"unschedulable": True})),
        node_info({**node("npu-b", "npu"), "status": {"allocatable": {"edgeai.dev/npu": "0"}}}),
    ]
    assert place(target(accelerator="npu"), nodes, DEFAULT_PROFILES).nodes == ()


def test_no_matching_nodes_names_the_selector() -> None:
    placed = place(
        target(accelerator="gpu", precision="fp16", node_selector={"site": "nowhere"}),
        NODES,
        DEFAULT_PROFILES,
    )
    assert placed.nodes == ()
    assert "edgeai.dev/accelerator=gpu,site=nowhere" in placed.message
    assert "nvidia.com/gpu" in placed.message


def test_fallback_runs_on_cpu_with_an_allowed_precision_and_says_so() -> None:
    placed = place(
        target(accelerator="gpu", precision="fp16", fallback="cpu",
               node_selector={"kubernetes.io/arch": "amd64"}),
        NODES,
        DEFAULT_PROFILES,
    )  # fmt: skip
    assert placed.fell_back
    assert (placed.accelerator, placed.precision) == ("cpu", "int8")
    assert placed.nodes == ("cpu-0", "cpu-1")
    assert placed.resource is None
    assert "running on cpu in int8 (fallback)" in placed.message


def test_fallback_without_nodes_reports_both() -> None:
    placed = place(
        target(accelerator="npu", fallback="gpu", node_selector={"site": "x"}),
        NODES,
        DEFAULT_PROFILES,
    )
    assert not placed.fell_back and placed.nodes == ()
    assert "fallback gpu" in placed.message


def test_unavailable_nodes_are_left_out_and_named() -> None:
    down = node("cpu-2", "cpu")
    lost = "Kubelet stopped posting node status."
    down["status"]["conditions"] = [
        {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": lost}
    ]
    down["spec"]["taints"] = [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]
    cordoned = node("cpu-3", "cpu", spec={"unschedulable": True})
    nodes = [node_info(n) for n in [*FLEET, down, cordoned]]
    cpu = place(target(), nodes, DEFAULT_PROFILES)
    assert cpu.nodes == ("cpu-0", "cpu-1")
    assert cpu.unavailable == (
        ("cpu-2", "NodeStatusUnknown: Kubelet stopped posting node status"),
        ("cpu-3", "cordoned"),
    )
    only = place(target(node_selector={"kubernetes.io/hostname": "cpu-2"}),
                 [node_info({**down, "metadata": {**down["metadata"], "labels": {
                     **down["metadata"]["labels"], "kubernetes.io/hostname": "cpu-2"}}})],
                 DEFAULT_PROFILES)  # fmt: skip
    assert not only.has_nodes
    assert "every node it runs on is unavailable: cpu-2 (NodeStatusUnknown" in only.message
