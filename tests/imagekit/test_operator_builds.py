"""The whole pipeline through the operator: an EdgeModel pointing at the real digits model,
served over HTTP, is fetched, verified, converted per accelerator (fp16 for the GPU, int8
for the NPU and CPU), gated on accuracy, appended to each accelerator's published server
index through the registry API (no daemon), smoke-tested on every platform, and run pinned
by digest, only on the architectures its image serves; the CPU image answers a
tritonclient inference; a wrong sha256 and a registry outage lose nothing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import digits
import numpy as np
import onnxruntime as ort
import pytest
from imagekit_support import Kit

from edgemodel_operator.adapters.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from clusterkit import (  # noqa: E402
    POOL_PREFIX,
    SIMULATED_ONLY,
    Cluster,
    OperatorProcess,
    publish_servers,
    wait_until,
)

GROUP, VERSION, PLURAL = "edgeai.dev", "v1alpha1", "edgemodels"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def builds_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"build-{uuid.uuid4().hex[:6]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    cluster.core.create_namespace({"metadata": {"name": name, "labels": labels}})
    yield name
    # Normally gone already: building_operator deletes it while the operator still runs.
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def served_model(digits_model: digits.DigitsModel) -> Iterator[str]:
    """The digits model's folder over HTTP, the way a model store serves it."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(digits_model.dir)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def start_operator(
    cluster: Cluster, servers: str, namespace: str, registry: str, work: Path, log: Path
) -> OperatorProcess:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(ROOT / "crds" / "edgemodels.edgeai.dev.yaml"))  # fmt: skip
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "EDGEMODEL_HEALTH_ADDRESS": f"127.0.0.1:{port}",
        "EDGEMODEL_RESYNC_SECONDS": "2",
        "EDGEMODEL_NAMESPACES": namespace,
        "EDGEMODEL_BUILDER": "registry",
        "EDGEMODEL_REGISTRY_URL": registry,
        "EDGEMODEL_REGISTRY_INSECURE": "true",
        "EDGEMODEL_SERVER_IMAGE": servers,
        "EDGEMODEL_WORK_DIR": str(work),
        "EDGEMODEL_ACCELERATORS": SIMULATED_ONLY,
    }
    proc = OperatorProcess(
        argv=[sys.executable, "-m", "edgemodel_operator"],
        env=env,
        log=log,
        health=f"http://127.0.0.1:{port}/healthz",
    )
    proc.start()
    return proc


@pytest.fixture(scope="module")
def all_servers(imagekit: Kit) -> str:
    """Every accelerator's server index (gpu and npu serve amd64 only)."""
    return publish_servers("cpu,gpu,npu", os.environ.get("E2E_PLATFORMS", "amd64,arm64"))


@pytest.fixture(scope="module")
def building_operator(
    cluster: Cluster, imagekit: Kit, all_servers: str, builds_namespace: str, work_dir: Path,
    pool: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:  # fmt: skip
    registry = f"{imagekit.registry}/edgemodels-test-{imagekit.run_id}"
    log = tmp_path_factory.mktemp("building-operator") / "operator.log"
    proc = start_operator(cluster, all_servers, builds_namespace, registry, work_dir, log)
    yield proc
    cluster.delete_namespace(builds_namespace)  # while the operator runs (its builds stop)
    proc.stop()


CPU_ONLY = [{"name": "cpu", "accelerator": "cpu", "precision": "int8", "replicas": 1}]
FLEET = [
    {"name": "jetson", "accelerator": "gpu", "precision": "fp16", "placement": "perNode"},
    {"name": "npu", "accelerator": "npu", "precision": "int8", "placement": "perNode"},
    *CPU_ONLY,
]


def edgemodel(
    name: str, base_uri: str, sha256: str, targets: list[dict[str, Any]] = CPU_ONLY
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": f"{base_uri}/model.onnx",
                "sha256": sha256,
                "version": "1.0.0",
                "validation": {"samplesUri": f"{base_uri}/samples.npz", "maxAccuracyDrop": 0.05},
            },
            "targets": targets,
        },
    }


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    em = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return dict(em.get("status") or {})


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def wait_status(
    cluster: Cluster, namespace: str, name: str, ok: Any, timeout: float, what: str
) -> dict[str, Any]:
    return wait_until(
        lambda: ok(s := status_of(cluster, namespace, name)) and s, timeout=timeout, what=what
    )


def test_three_accelerators_get_built_tested_images_pinned_by_digest(
    cluster: Cluster, building_operator: OperatorProcess, builds_namespace: str,
    digits_model: digits.DigitsModel, served_model: str, imagekit: Kit, work_dir: Path,
) -> None:  # fmt: skip
    sha = hashlib.sha256(digits_model.model.read_bytes()).hexdigest()
    cluster.kubectl("apply", "-n", builds_namespace, "-f", "-",
                    input=json.dumps(edgemodel("digits", served_model, sha, FLEET)))  # fmt: skip
    building = wait_status(
        cluster, builds_namespace, "digits", lambda s: s.get("phase") == "Building", 30, "Building"
    )
    assert cond(building, "ImagesReady")["status"] == "False"
    # ImagesReady, not Ready: the shared fleet's exclusive GPUs may be taken by other tests.
    ready = wait_status(
        cluster, builds_namespace, "digits",
        lambda s: cond(s, "ImagesReady").get("status") == "True", 500,
        "three images built, smoke-tested and pushed",
    )  # fmt: skip
    assert cond(ready, "ImagesReady")["reason"] == "ImagesBuilt"
    images = {i["variant"]: i for i in ready["images"]}
    assert sorted(images) == ["cpu/int8", "gpu/fp16", "npu/int8"]
    smoke = {v: {p["architecture"]: p["smokeTest"] for p in i["platforms"]}
             for v, i in images.items()}  # fmt: skip
    assert smoke["cpu/int8"] == {"amd64": "passed on CPUExecutionProvider",
                                 "arm64": "passed on CPUExecutionProvider"}  # fmt: skip
    # No GPU or NPU here: those images answered on CPU, and say so.
    assert list(smoke["gpu/fp16"]) == ["amd64"]
    assert smoke["gpu/fp16"]["amd64"].startswith("cpu-fallback: no gpu on the builder")
    assert smoke["npu/int8"]["amd64"].startswith("cpu-fallback: no npu on the builder")
    # The Jetsons are arm64: the x86 GPU image does not run there, and status says so.
    placed = wait_status(
        cluster, builds_namespace, "digits",
        lambda s: cond(s, "Degraded").get("reason") == "NoImageForArchitecture", 60,
        "NoImageForArchitecture for the Jetsons",
    )  # fmt: skip
    assert f"{POOL_PREFIX}-gpu-0" in cond(placed, "Degraded")["message"]
    assert "the gpu/fp16 image serves amd64 only" in cond(placed, "Degraded")["message"]
    registry = Registry(insecure=True)
    for variant, image in images.items():
        repo, _, digest = image["image"].partition("@sha256:")
        assert (
            repo
            == f"{imagekit.registry}/edgemodels-test-{imagekit.run_id}/{builds_namespace}/digits"
        )
        manifest = registry.manifest(repo, f"sha256:{digest}")
        assert manifest is not None and manifest.size_bytes == image["sizeBytes"], variant
    running = {
        "jetson": cluster.apps.read_namespaced_daemon_set("digits-jetson", builds_namespace),
        "npu": cluster.apps.read_namespaced_daemon_set("digits-npu", builds_namespace),
        "cpu": cluster.apps.read_namespaced_deployment("digits-cpu", builds_namespace),
    }
    assert {t: w.spec.template.spec.containers[0].image for t, w in running.items()} == {
        "jetson": images["gpu/fp16"]["image"],
        "npu": images["npu/int8"]["image"],
        "cpu": images["cpu/int8"]["image"],
    }

    # The CPU image, run for real by digest, answers a standard client like the variant does.
    import docker
    import tritonclient.http as triton

    client = docker.DockerClient(base_url=imagekit.docker_host)
    port = free_port()
    container = client.containers.run(images["cpu/int8"]["image"], detach=True,
                                      ports={"8080/tcp": ("127.0.0.1", port)})  # fmt: skip
    try:
        triton_client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
        wait_until(lambda: _ready(triton_client), timeout=60, what="the CPU image to be ready")
        x, y = digits_model.load_samples()
        batch = x[:16].astype(np.float32)
        request = triton.InferInput("input", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        outputs = [o["name"] for o in triton_client.get_model_metadata("digits")["outputs"]]
        assert "probabilities" in outputs
        answer = triton_client.infer("digits", [request]).as_numpy("probabilities")
        variant = work_dir / "variants" / sha / "cpu" / "model-int8.onnx"
        session = ort.InferenceSession(str(variant), providers=["CPUExecutionProvider"])
        expected = session.run(["probabilities"], {"input": batch})[0]
        assert np.array_equal(answer.argmax(axis=1), expected.argmax(axis=1))
        assert (answer.argmax(axis=1) == y[:16]).mean() > 0.8
    finally:
        container.remove(force=True)
        client.close()


def _ready(triton_client: Any) -> bool:
    try:
        return bool(triton_client.is_server_ready())
    except Exception:
        return False


def test_a_wrong_sha256_builds_nothing_and_says_so(
    cluster: Cluster, building_operator: OperatorProcess, builds_namespace: str,
    served_model: str,
) -> None:  # fmt: skip
    wrong = "0" * 64
    cluster.kubectl("apply", "-n", builds_namespace, "-f", "-",
                    input=json.dumps(edgemodel("tampered", served_model, wrong)))  # fmt: skip
    failed = wait_status(
        cluster, builds_namespace, "tampered",
        lambda s: cond(s, "Degraded").get("reason") == "ModelDigestMismatch", 60,
        "ModelDigestMismatch",
    )  # fmt: skip
    assert failed["phase"] == "Failed"
    assert "nothing was built" in cond(failed, "ImagesReady")["message"]
    assert wrong in cond(failed, "ImagesReady")["message"]
    names = [
        d.metadata.name for d in cluster.apps.list_namespaced_deployment(builds_namespace).items
    ]
    assert "tampered-cpu" not in names


def test_a_registry_outage_says_so_and_keeps_what_serves(
    cluster: Cluster, imagekit: Kit, served_model: str, digits_model: digits.DigitsModel,
    tmp_path: Path, pool: list[str], all_servers: str,
) -> None:  # fmt: skip
    namespace = f"build-outage-{uuid.uuid4().hex[:6]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    cluster.core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
    dead = f"127.0.0.1:{free_port()}/edgemodels"  # nothing listens there
    proc = start_operator(cluster, all_servers, namespace, dead, tmp_path / "work",
                          tmp_path / "operator.log")  # fmt: skip
    try:
        sha = hashlib.sha256(digits_model.model.read_bytes()).hexdigest()
        own = [{**CPU_ONLY[0], "image": "example.com/own-server:1"}]  # needs no build
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=json.dumps(edgemodel("steady", served_model, sha, own)))  # fmt: skip
        wait_status(cluster, namespace, "steady",
                    lambda s: cond(s, "Ready").get("status") == "True", 60, "Ready")  # fmt: skip
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=json.dumps(edgemodel("steady", served_model, sha)))  # fmt: skip
        stuck = wait_status(
            cluster, namespace, "steady",
            lambda s: cond(s, "ImagesReady").get("reason") == "BuildFailed", 90,
            "the build to fail on the registry",
        )  # fmt: skip
        assert dead.split("/")[0] in cond(stuck, "ImagesReady")["message"]
        assert "retrying in" in cond(stuck, "ImagesReady")["message"]
        assert stuck["phase"] == "Building"
        assert cond(stuck, "Ready")["status"] == "True"  # what served still serves
        time.sleep(4)
        dep = cluster.apps.read_namespaced_deployment("steady-cpu", namespace)
        assert dep.spec.template.spec.containers[0].image == "example.com/own-server:1"
    finally:
        cluster.delete_namespace(namespace)
        proc.stop()
