"""On the real node (kubelet + containerd): model servers pulled from the local registry,
fetching and verifying their model, serving it through their Service to a real client,
and bad versions rolled back by the crash-loop and probe gates while the stable version
keeps answering every request."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from clusterkit import STATE, Cluster, e2e_labeled, wait_until
from test_edgemodel import GROUP, VERSION, apply, condition, get_em

from conftest import ModelStore, RealNode

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("serving_operator")

PROBE = {"periodSeconds": 2, "failureThreshold": 2}  # promotion after 4 s Ready


@pytest.fixture(scope="module")
def digits_model() -> Any:
    import sys

    sys.path.insert(0, str(HERE.parent / "models"))
    import digits

    return digits.build()


def publish(store: ModelStore, name: str, data: bytes) -> tuple[str, str]:
    """Put a model file in the store; its URI and sha256."""
    path = store.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)
    return f"{store.url}/{name}", hashlib.sha256(data).hexdigest()


def broken(kind: str, tmp_path: Path) -> bytes:
    import sys

    sys.path.insert(0, str(HERE.parent / "models"))
    import broken as makers

    return bytes(makers.MAKERS[kind](tmp_path / f"{kind}.onnx").read_bytes())


def edgemodel(name: str, node: RealNode, uri: str, sha: str, version: str) -> dict[str, Any]:
    return e2e_labeled({
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, "sha256": sha, "version": version},
            "targets": [{"name": "cpu", "accelerator": "cpu", "precision": "fp32",
                         "replicas": 2,
                         "nodeSelector": {"kubernetes.io/hostname": node.name}}],
            "serving": {"probe": PROBE},
            "rollout": {"progressDeadlineSeconds": 120},
        },
    })  # fmt: skip


def wait_promoted(cluster: Cluster, namespace: str, name: str, timeout: float = 240) -> Any:
    def check() -> Any:
        em = get_em(cluster, namespace, name)
        status = em.get("status") or {}
        fresh = status.get("observedGeneration") == em["metadata"]["generation"]
        ok = fresh and status.get("stableRevision") == status.get("revision")
        return em if ok and (condition(em, "Ready") or {}).get("status") == "True" else None

    return wait_until(check, timeout=timeout, what=f"{name} Ready and promoted to stable")


def wait_rolled_back(cluster: Cluster, namespace: str, name: str, revision: str) -> Any:
    def check() -> Any:
        em = get_em(cluster, namespace, name)
        failed = [f["revision"] for f in (em.get("status") or {}).get("failedRevisions", [])]
        rolled = condition(em, "RolledBack") or {}
        return em if revision in failed and rolled.get("status") == "True" else None

    return wait_until(check, timeout=180, what=f"{name} to roll back revision {revision}")


def revision_after(cluster: Cluster, namespace: str, name: str, generation: int) -> str:
    def check() -> str | None:
        status = get_em(cluster, namespace, name).get("status") or {}
        return status.get("revision") if status.get("observedGeneration") == generation else None

    return str(wait_until(check, timeout=60, what=f"{name} to observe generation {generation}"))


class Caller:
    """An app calling the model through its Service in a loop: a new connection per
    request, one inference each; every failure is kept with the time it happened."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        self.url, self.body = url, body
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = requests.post(self.url, json=self.body, timeout=5)
                if answer.status_code == 200 and answer.json()["outputs"]:
                    self.ok += 1
                else:
                    self.failures.append(f"{time.time():.1f} HTTP {answer.status_code}")
            except (requests.RequestException, ValueError, KeyError) as err:
                self.failures.append(f"{time.time():.1f} {type(err).__name__}: {err}")
            time.sleep(0.05)

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def cluster_ip(cluster: Cluster, namespace: str, service: str) -> str:
    return str(cluster.core.read_namespaced_service(service, namespace).spec.cluster_ip)


def test_a_model_serves_on_the_real_node_through_its_service(
    cluster: Cluster, namespace: str, real_node: RealNode, model_store: ModelStore,
    digits_model: Any, server_images: str,
) -> None:  # fmt: skip
    uri, sha = publish(model_store, "digits/1.0.0/model.onnx", digits_model.model.read_bytes())
    apply(cluster, namespace, edgemodel("digits", real_node, uri, sha, "1.0.0"))
    em = wait_promoted(cluster, namespace, "digits")
    (target,) = em["status"]["targets"]
    assert (target["service"], target["endpoints"], target["nodes"]) == (
        "digits-cpu",
        2,
        [real_node.name],
    )

    pods = cluster.core.list_namespaced_pod(namespace, label_selector="edgeai.dev/edgemodel=digits")
    for pod in pods.items:
        assert pod.spec.node_name == real_node.name and pod.status.phase == "Running"
        # The published server image, pinned by the digest its tag had when applied.
        repository = server_images.format(accelerator="cpu").rsplit(":", 1)[0]
        assert pod.spec.containers[0].image.startswith(f"{repository}@sha256:")
        (fetched,) = pod.status.init_container_statuses
        assert fetched.name == "fetch-model" and fetched.state.terminated.reason == "Completed"
        gate = next(c for c in pod.status.conditions if c.type == "edgeai.dev/probe-passed")
        assert gate.status == "True"

    service = cluster.core.read_namespaced_service("digits-cpu", namespace)
    assert service.spec.internal_traffic_policy == "Cluster"
    assert [(p.name, p.port) for p in service.spec.ports] == [("http", 8080)]
    x, y = digits_model.load_samples()
    client = triton.InferenceServerClient(f"{service.spec.cluster_ip}:8080")
    inputs = triton.InferInput("input", [64, 64], "FP32")
    inputs.set_data_from_numpy(x[:64], binary_data=True)
    wanted = [triton.InferRequestedOutput("label", binary_data=True)]
    answer = client.infer("digits", [inputs], outputs=wanted)
    accuracy = float(np.mean(answer.as_numpy("label") == y[:64]))
    assert accuracy >= 0.9, accuracy
    wide = cluster.kubectl("get", "em", "digits", "-n", namespace, "-o", "wide").splitlines()
    row = dict(zip(wide[0].split(), wide[1].split(), strict=False))  # columns up to Updated
    assert (row["SERVICES"], row["ENDPOINTS"]) == ("digits-cpu", "2")
    assert wide[1].endswith("2 of 2 pods updated (100.0 %), 0 unavailable, 0 failed")


def test_a_model_whose_sha256_differs_is_never_served(
    cluster: Cluster, namespace: str, real_node: RealNode, model_store: ModelStore,
    digits_model: Any,
) -> None:  # fmt: skip
    uri, _ = publish(model_store, "tampered/model.onnx", digits_model.model.read_bytes() + b"!")
    apply(cluster, namespace, edgemodel("tampered", real_node, uri, "ab" * 32, "1.0.0"))

    def refused() -> dict[str, Any] | None:
        em = get_em(cluster, namespace, "tampered")
        degraded = condition(em, "Degraded") or {}
        return em if "ModelDigestMismatch" in degraded.get("message", "") else None

    em = wait_until(refused, timeout=120, what="tampered Degraded with ModelDigestMismatch")
    message = condition(em, "Degraded")["message"]
    assert "init container fetch-model" in message and "ab" * 32 in message
    assert em["status"]["targets"][0]["endpoints"] == 0


def test_bad_versions_roll_back_while_the_stable_one_keeps_serving(
    cluster: Cluster, namespace: str, real_node: RealNode, model_store: ModelStore,
    digits_model: Any, tmp_path: Path,
) -> None:  # fmt: skip
    uri, sha = publish(model_store, "served/1.0.0/model.onnx", digits_model.model.read_bytes())
    apply(cluster, namespace, edgemodel("served", real_node, uri, sha, "1.0.0"))
    stable = wait_promoted(cluster, namespace, "served")["status"]["stableRevision"]
    x, _ = digits_model.load_samples()
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                        "data": x[0].tolist()}]}  # fmt: skip
    url = f"http://{cluster_ip(cluster, namespace, 'served-cpu')}:8080/v2/models/served/infer"
    bad = [
        ("unloadable", "CrashLooping", "ModelLoadFailed"),  # the server exits
        ("failing", "ProbeFailed", "an inference answered 500"),  # errors on inference
        ("misshaped", "ProbeFailed", "has shape [1, 5], declared [-1, 10]"),
    ]
    with Caller(url, body) as caller:
        for generation, (kind, gate, evidence) in enumerate(bad, start=2):
            uri, sha = publish(model_store, f"served/{kind}/model.onnx", broken(kind, tmp_path))
            apply(cluster, namespace, edgemodel("served", real_node, uri, sha, f"2.0.{generation}"))
            revision = revision_after(cluster, namespace, "served", generation)
            em = wait_rolled_back(cluster, namespace, "served", revision)
            rolled = condition(em, "RolledBack")
            assert rolled["reason"] == gate, rolled
            assert evidence in rolled["message"], rolled["message"]
            assert em["status"]["stableRevision"] == stable
            # Back on the stable revision: its two pods serve, the bad ones are gone.
            wait_until(lambda: get_em(cluster, namespace, "served")["status"]["targets"][0]
                       ["endpoints"] == 2, timeout=60, what="both stable pods serving")  # fmt: skip
    assert caller.failures == [], caller.failures[:5]
    assert caller.ok > 50, caller.ok


@pytest.fixture
def kubelet(real_node: RealNode) -> Iterator[int]:
    """The real node's kubelet process; continued whatever the test did to it."""
    pid = int((STATE / "nodes" / real_node.name / "kubelet.pid").read_text())
    yield pid
    os.kill(pid, signal.SIGCONT)


def test_a_node_that_goes_away_pauses_its_rollout_and_loses_nothing(
    cluster: Cluster, namespace: str, real_node: RealNode, model_store: ModelStore,
    digits_model: Any, kubelet: int,
) -> None:  # fmt: skip
    uri, sha = publish(model_store, "away/1.0.0/model.onnx", digits_model.model.read_bytes())
    apply(cluster, namespace, edgemodel("away", real_node, uri, sha, "1.0.0"))
    stable = wait_promoted(cluster, namespace, "away")["status"]["stableRevision"]

    os.kill(kubelet, signal.SIGSTOP)  # the board hangs: no status, no lease renewals
    apply(cluster, namespace, edgemodel("away", real_node, uri, sha, "1.1.0"))

    def paused() -> dict[str, Any] | None:
        em = get_em(cluster, namespace, "away")
        progressing = condition(em, "Progressing") or {}
        return em if progressing.get("reason") == "NodesUnavailable" else None

    em = wait_until(paused, timeout=150, what="the rollout paused for the unavailable node")
    degraded = condition(em, "Degraded")
    assert degraded["reason"] == "NodesUnavailable"
    assert f"{real_node.name} (NodeStatusUnknown" in degraded["message"]
    assert em["status"]["targets"][0]["unavailable"] == 1
    assert em["status"]["stableRevision"] == stable and em["status"].get("failedRevisions") == []

    os.kill(kubelet, signal.SIGCONT)  # back: the rollout resumes and completes
    promoted = wait_promoted(cluster, namespace, "away")
    assert promoted["status"]["stableRevision"] != stable
    assert promoted["status"]["targets"][0]["endpoints"] == 2
    assert (condition(promoted, "RolledBack") or {}).get("status") != "True"
