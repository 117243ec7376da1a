"""The whole pipeline through the operator: an EdgeModel pointing at the real digits model
is fetched, verified, quantized, gated on accuracy, built into an image through podman's
Docker API, smoke-tested, pushed to the local registry and run pinned by digest."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import digits
import pytest
from imagekit_support import Kit

from edgemodel_operator.adapters.images import Registry

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from clusterkit import Cluster, OperatorProcess, wait_until  # noqa: E402

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
    cluster.core.delete_namespace(name)


@pytest.fixture(scope="module")
def building_operator(
    cluster: Cluster, imagekit: Kit, builds_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(ROOT / "crds" / "edgemodels.edgeai.dev.yaml"))  # fmt: skip
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "EDGEMODEL_HEALTH_ADDRESS": f"127.0.0.1:{port}",
        "EDGEMODEL_RESYNC_SECONDS": "2",
        "EDGEMODEL_NAMESPACES": builds_namespace,
        "DOCKER_HOST": imagekit.docker_host,
        "EDGEMODEL_REGISTRY_URL": f"{imagekit.registry}/edgemodels-test-{imagekit.run_id}",
        "EDGEMODEL_REGISTRY_INSECURE": "true",
        "EDGEMODEL_BUILD_CONTEXT": str(ROOT / "images"),
        "EDGEMODEL_WHEELS_DIR": str(imagekit.wheels.parent),
        "EDGEMODEL_BASE_IMAGE": imagekit.base_image,
        "EDGEMODEL_WORK_DIR": str(tmp_path_factory.mktemp("work")),
    }
    proc = OperatorProcess(
        argv=[sys.executable, "-m", "edgemodel_operator"],
        env=env,
        log=tmp_path_factory.mktemp("building-operator") / "operator.log",
        health=f"http://127.0.0.1:{port}/healthz",
    )
    proc.start()
    yield proc
    proc.stop()


def edgemodel(name: str, model: digits.DigitsModel, sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": model.model.as_uri(),
                "sha256": sha256,
                "version": "1.0.0",
                "validation": {"samplesUri": model.samples.as_uri(), "maxAccuracyDrop": 0.05},
            },
            "targets": [{"name": "cpu", "accelerator": "cpu", "precision": "int8", "replicas": 1}],
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


def test_edgemodel_gets_a_built_tested_image_pinned_by_digest(
    cluster: Cluster, building_operator: OperatorProcess, builds_namespace: str,
    digits_model: digits.DigitsModel, imagekit: Kit,
) -> None:  # fmt: skip
    sha = hashlib.sha256(digits_model.model.read_bytes()).hexdigest()
    cluster.kubectl("apply", "-n", builds_namespace, "-f", "-",
                    input=json.dumps(edgemodel("digits", digits_model, sha)))  # fmt: skip
    building = wait_until(
        lambda: (
            (s := status_of(cluster, builds_namespace, "digits")).get("phase") == "Building" and s
        ),
        timeout=30,
        what="the phase to show Building",
    )
    assert cond(building, "ImagesReady")["status"] == "False"
    ready = wait_until(
        lambda: (
            cond(s := status_of(cluster, builds_namespace, "digits"), "Ready").get("status")
            == "True"
            and s
        ),
        timeout=240,
        what="the image to be built and the model Ready",
    )
    assert cond(ready, "ImagesReady")["reason"] == "ImagesBuilt"
    (image,) = ready["images"]
    assert image["variant"] == "cpu/int8"
    repo, _, digest = image["image"].partition("@sha256:")
    assert repo.startswith(f"{imagekit.registry}/edgemodels-test-{imagekit.run_id}/")
    deployment = cluster.apps.read_namespaced_deployment("digits-cpu", builds_namespace)
    assert deployment.spec.template.spec.containers[0].image == image["image"]
    manifest = Registry(insecure=True).manifest(repo, f"sha256:{digest}")
    assert manifest is not None and manifest.size_bytes == image["sizeBytes"] > 10_000_000


def test_a_wrong_sha256_builds_nothing_and_says_so(
    cluster: Cluster, building_operator: OperatorProcess, builds_namespace: str,
    digits_model: digits.DigitsModel,
) -> None:  # fmt: skip
    wrong = "0" * 64
    cluster.kubectl("apply", "-n", builds_namespace, "-f", "-",
                    input=json.dumps(edgemodel("tampered", digits_model, wrong)))  # fmt: skip
    failed = wait_until(
        lambda: (
            cond(s := status_of(cluster, builds_namespace, "tampered"), "Degraded").get("reason")
            == "ModelDigestMismatch"
            and s
        ),
        timeout=60,
        what="ModelDigestMismatch",
    )
    assert failed["phase"] == "Failed"
    assert "nothing was built" in cond(failed, "ImagesReady")["message"]
    assert wrong in cond(failed, "ImagesReady")["message"]
    names = [
        d.metadata.name for d in cluster.apps.list_namespaced_deployment(builds_namespace).items
    ]
    assert "tampered-cpu" not in names
