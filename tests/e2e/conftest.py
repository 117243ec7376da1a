"""The operator under test: the CRD installed for real, `python -m edgemodel_operator` run
as a separate process against the local cluster."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterkit import Cluster, OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "edgemodels.edgeai.dev.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> Path:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/edgemodels.edgeai.dev",
    )  # fmt: skip
    return CRD


# One operator per test module, watching the whole cluster. Module scope: it is gone before
# other suites (the image builds) start operators of their own. Not a namespace glob: kopf
# watching "e2e-*" hung at start-up when a matching namespace vanished during its listing.
@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, crd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "EDGEMODEL_HEALTH_ADDRESS": f"127.0.0.1:{port}",
        "EDGEMODEL_RESYNC_SECONDS": "2",
        "EDGEMODEL_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    proc = OperatorProcess(
        argv=[sys.executable, "-m", "edgemodel_operator"],
        env=env,
        log=tmp_path_factory.mktemp("operator") / "operator.log",
        health=f"http://127.0.0.1:{port}/healthz",
    )
    proc.start()
    yield proc
    proc.stop()
