"""The operator under test: the CRD installed for real, `python -m edgemodel_operator` run
as a separate process against the local cluster; and for the real-node tests, the model
server images, a real node and a model store its pods can reach."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clusterkit import E2E_LABEL, SIMULATED_ONLY, Cluster, OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "edgemodels.edgeai.dev.yaml"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> Path:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/edgemodels.edgeai.dev",
    )  # fmt: skip
    return CRD


def start_operator(cluster: Cluster, log: Path, **env: str) -> OperatorProcess:
    """The operator as a process, cluster-wide, handling only EdgeModels labeled
    E2E_LABEL (so that a demo running in the same cluster keeps its own)."""
    port = free_port()
    proc = OperatorProcess(
        argv=[sys.executable, "-m", "edgemodel_operator"],
        env={
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "EDGEMODEL_HEALTH_ADDRESS": f"127.0.0.1:{port}",
            "EDGEMODEL_RESYNC_SECONDS": "2",
            "EDGEMODEL_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            "EDGEMODEL_SELECTOR": "=".join(E2E_LABEL),
            **env,
        },
        log=log,
        health=f"http://127.0.0.1:{port}/healthz",
    )
    proc.start()
    return proc


# One operator per test module, watching the whole cluster. Module scope: it is gone before
# other suites (the image builds) start operators of their own. Not a namespace glob: kopf
# watching "e2e-*" hung at start-up when a matching namespace vanished during its listing.
@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, crd: Path, pool: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """For the simulated fleet: targets placed on the tests' pool of KWOK nodes."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = start_operator(cluster, log, EDGEMODEL_ACCELERATORS=SIMULATED_ONLY)
    yield proc
    proc.stop()


# --- real nodes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealNode:
    name: str
    address: str  # its InternalIP: the pod bridge's gateway, which its pods reach


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> RealNode:
    """A Ready real (kubelet + containerd) CPU node of the cluster."""
    for node in cluster.core.list_node(label_selector="type!=kwok").items:
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        if ready and node.metadata.labels.get("edgeai.dev/accelerator") == "cpu":
            address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
            return RealNode(node.metadata.name, address)
    pytest.fail("the cluster has no Ready real node: start it with REAL_NODES=1 (the default)")


@dataclass(frozen=True)
class ModelStore:
    url: str  # http://<node address>:<port>
    root: Path  # the folder it serves


@pytest.fixture(scope="session")
def model_store(
    real_node: RealNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelStore]:
    """An HTTP model store on the real node's bridge address: its pods and the operator on
    the host both reach it (pods cannot reach the host's 127.0.0.1)."""
    root = tmp_path_factory.mktemp("model-store")
    root.chmod(0o755)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((real_node.address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ModelStore(f"http://{real_node.address}:{server.server_address[1]}", root)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def serving_operator(
    cluster: Cluster, crd: Path, server_images: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator as a site would run it: the published server images, the active probe."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = start_operator(cluster, log, EDGEMODEL_SERVER_IMAGE=server_images,
                          EDGEMODEL_ACTIVE_PROBE="true")  # fmt: skip
    yield proc
    proc.stop()
