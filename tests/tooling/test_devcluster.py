"""Unit tests of the local cluster's pure parts: fleet parsing, node manifests, ports."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # devcluster imports its siblings (realnode, imagekit)
spec = importlib.util.spec_from_file_location("devcluster", ROOT / "hack" / "devcluster.py")
assert spec and spec.loader
devcluster = importlib.util.module_from_spec(spec)
sys.modules["devcluster"] = devcluster
spec.loader.exec_module(devcluster)


def test_parse_fleet_defaults_and_sizes() -> None:
    assert devcluster.parse_fleet(devcluster.DEFAULT_FLEET) == {"gpu": 3, "npu": 3, "cpu": 6}
    assert devcluster.parse_fleet("gpu=300,npu=300,cpu=900") == {"gpu": 300, "npu": 300, "cpu": 900}
    assert devcluster.parse_fleet("cpu=2") == {"gpu": 0, "npu": 0, "cpu": 2}


@pytest.mark.parametrize("bad", ["tpu=1", "gpu=", "gpu=-1", "gpu"])
def test_parse_fleet_rejects_bad_entries(bad: str) -> None:
    with pytest.raises(devcluster.ClusterError, match="bad fleet entry"):
        devcluster.parse_fleet(bad)


def test_gpu_node_looks_like_a_jetson() -> None:
    node = devcluster.node_manifest("edge-gpu-0", devcluster.node_kinds("gpu", 0))
    labels = node["metadata"]["labels"]
    assert labels["edgeai.dev/accelerator"] == "gpu"
    assert labels["kubernetes.io/arch"] == "arm64"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}


def test_npu_nodes_alternate_architectures_and_cpu_nodes_have_no_extras() -> None:
    archs = {devcluster.node_kinds("npu", i).arch for i in range(4)}
    assert archs == {"amd64", "arm64"}
    cpu = devcluster.node_manifest("edge-cpu-0", devcluster.node_kinds("cpu", 0))
    assert set(cpu["status"]["capacity"]) == {"cpu", "memory", "pods"}
    assert cpu["spec"]["taints"] == []


def test_taken_port_is_reported_by_name() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ports = devcluster.Ports.from_base(port - 43)  # the apiserver lands on `port`
        with pytest.raises(devcluster.ClusterError, match=f"kube-apiserver needs 127.0.0.1:{port}"):
            devcluster.check_ports_free(ports)


def test_missing_binaries_are_listed_not_hung_on(tmp_path: Path) -> None:
    layout = devcluster.Layout(
        state=tmp_path, bin_dir=tmp_path / "k8s", kwok_dir=tmp_path / "kwok",
        etcd_dir=tmp_path / "etcd", ports=devcluster.Ports.from_base(16400),
    )  # fmt: skip
    with pytest.raises(devcluster.ClusterError) as err:
        devcluster.check_prerequisites(layout)
    for name in ("kube-apiserver", "kubectl", "kwok", "etcd"):
        assert name in str(err.value)
