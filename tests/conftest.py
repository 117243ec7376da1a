"""Session fixtures: the local edge cluster, started once (or reused) for e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from clusterkit import Cluster, publish_servers, wait_until  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """e2e: every test that needs real infrastructure (the cluster or the image kit)."""
    for item in items:
        needs = set(getattr(item, "fixturenames", ())) & {
            "cluster",
            "imagekit",
            "helm",
            "server_images",
        }
        if "/e2e/" in str(item.path) or needs:
            item.add_marker(pytest.mark.e2e)


def _devcluster(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "devcluster.py"), *args],
        text=True,
        capture_output=not check,
        check=check,
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local edge cluster. A running one is reused and left running; one started here
    is stopped at the end of the session (set DEVCLUSTER_KEEP=1 to keep it)."""
    started = _devcluster("status", check=False).returncode != 0
    if started:
        _devcluster("up")
    tools = subprocess.run(
        [str(ROOT / "hack" / "build-tools.sh")], text=True, capture_output=True, check=True
    ).stdout.strip()
    k8s_dir = Path(tools.split(":")[0])
    yield Cluster(kubeconfig=ROOT / ".devcluster" / "kubeconfig", kubectl_path=k8s_dir / "kubectl")
    if started and not os.environ.get("DEVCLUSTER_KEEP"):
        _devcluster("down")


@pytest.fixture(scope="session")
def server_images() -> str:
    """The CPU model-server index (amd64 and arm64; E2E_PLATFORMS to narrow)."""
    return publish_servers("cpu", os.environ.get("E2E_PLATFORMS", "amd64,arm64"))


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, enforcing Pod Security "restricted"."""
    base = request.node.name.lower().replace("_", "-").removeprefix("test-")[:40].strip("-")
    name = f"e2e-{base}-{uuid.uuid4().hex[:5]}"
    cluster.core.create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            }
        }
    )
    wait_until(
        lambda: cluster.core.list_namespaced_service_account(name).items,
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    cluster.delete_namespace(name)
