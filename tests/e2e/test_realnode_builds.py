"""Daemonless per-model images on the real node: the operator quantizes the digits model,
appends it to the published multi-arch server index through the registry's API, smoke-tests
the amd64 image and the arm64 one (under emulation), pins the index by digest, and the real
node pulls its architecture and serves the model through the target's Service."""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from clusterkit import Cluster, OperatorProcess
from test_realnode import edgemodel, publish, wait_promoted

from conftest import ModelStore, RealNode, start_operator
from edgemodel_operator.adapters.registry import Registry, split_reference

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def digits_model() -> Any:
    sys.path.insert(0, str(HERE.parent / "models"))
    import digits

    return digits.build()


@pytest.fixture(scope="module")
def building_operator(
    cluster: Cluster, crd: Path, server_images: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OperatorProcess, str]]:
    registry = server_images.split("/", 1)[0] + f"/e2e-builds-{uuid.uuid4().hex[:6]}"
    tmp = tmp_path_factory.mktemp("building-operator")
    proc = start_operator(
        cluster, tmp / "operator.log", EDGEMODEL_SERVER_IMAGE=server_images,
        EDGEMODEL_ACTIVE_PROBE="true", EDGEMODEL_BUILDER="registry",
        EDGEMODEL_REGISTRY_URL=registry, EDGEMODEL_REGISTRY_INSECURE="true",
        EDGEMODEL_WORK_DIR=str(tmp / "work"),
    )  # fmt: skip
    yield proc, registry
    proc.stop()


def test_a_daemonless_model_image_serves_on_the_real_node(
    cluster: Cluster, namespace: str, real_node: RealNode, model_store: ModelStore,
    digits_model: Any, building_operator: tuple[OperatorProcess, str],
) -> None:  # fmt: skip
    _, registry = building_operator
    uri, sha = publish(model_store, "built/1.0.0/model.onnx", digits_model.model.read_bytes())
    samples, _ = publish(model_store, "built/1.0.0/samples.npz", digits_model.samples.read_bytes())
    em = edgemodel("built", real_node, uri, sha, "1.0.0")
    em["spec"]["targets"][0].update(precision="int8", replicas=1)
    em["spec"]["model"]["validation"] = {"samplesUri": samples, "maxAccuracyDrop": 0.05}
    from test_edgemodel import apply

    apply(cluster, namespace, em)
    ready = wait_promoted(cluster, namespace, "built", timeout=600)
    (image,) = ready["status"]["images"]
    assert image["variant"] == "cpu/int8"
    assert image["image"].startswith(f"{registry}/{namespace}/built@sha256:")
    assert {p["architecture"]: p["smokeTest"] for p in image["platforms"]} == {
        "amd64": "passed on CPUExecutionProvider",
        "arm64": "passed on CPUExecutionProvider",  # ran under emulation
    }
    repo, digest = split_reference(image["image"])
    index = Registry(insecure=True).manifest(repo, digest)
    assert index is not None and sorted(index.platforms or {}) == ["amd64", "arm64"]

    (pod,) = cluster.core.list_namespaced_pod(
        namespace, label_selector="edgeai.dev/edgemodel=built"
    ).items
    assert pod.spec.node_name == real_node.name
    assert pod.spec.containers[0].image == image["image"]  # the index, by digest
    assert not pod.spec.init_containers  # the model is in the image: nothing to fetch
    assert pod.status.container_statuses[0].image_id == image["image"]

    ip = cluster.core.read_namespaced_service("built-cpu", namespace).spec.cluster_ip
    client = triton.InferenceServerClient(f"{ip}:8080")
    assert client.get_model_metadata("built")["parameters"]["precision"] == "int8"
    x, y = digits_model.load_samples()
    inputs = triton.InferInput("input", [64, 64], "FP32")
    inputs.set_data_from_numpy(x[:64], binary_data=True)
    answer = client.infer("built", [inputs])
    assert float(np.mean(answer.as_numpy("label") == y[:64])) >= 0.9
    assert hashlib.sha256(digits_model.model.read_bytes()).hexdigest() == sha
