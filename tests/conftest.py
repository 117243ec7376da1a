"""Session fixtures: the local edge cluster, started once (or reused) for e2e tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from clusterkit import (  # noqa: E402
    POOL_LABEL,
    POOL_PREFIX,
    POOL_TAINT,
    STATE,
    Cluster,
    publish_servers,
    wait_until,
)


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
    state = _devcluster("status", check=False).returncode
    started = state not in (0, 3)  # 3: it runs, a real node's process is down (healed next)
    if state != 0:
        _devcluster("up")
    tools = subprocess.run(
        [str(ROOT / "hack" / "build-tools.sh")], text=True, capture_output=True, check=True
    ).stdout.strip()
    k8s_dir = Path(tools.split(":")[0])
    yield Cluster(kubeconfig=STATE / "kubeconfig", kubectl_path=k8s_dir / "kubectl")
    if started and not os.environ.get("DEVCLUSTER_KEEP"):
        _devcluster("down")


@pytest.fixture(scope="session")
def pool(cluster: Cluster) -> Iterator[list[str]]:
    """This session's own simulated nodes (3 GPU, 3 NPU, 6 CPU, like the default fleet),
    labeled and tainted edgeai.dev/pool=e2e-<session>; created here, deleted at the end."""
    sys.path.insert(0, str(ROOT / "hack"))
    import devcluster

    nodes = []
    for accelerator, count in (("gpu", 3), ("npu", 3), ("cpu", 6)):
        for i in range(count):
            node = devcluster.node_manifest(f"{POOL_PREFIX}-{accelerator}-{i}",
                                            devcluster.node_kinds(accelerator, i))  # fmt: skip
            node["metadata"]["labels"][POOL_LABEL[0]] = POOL_LABEL[1]  # type: ignore[index]
            node["spec"]["taints"] = [*node["spec"]["taints"], POOL_TAINT]  # type: ignore[index]
            nodes.append(node)
    existing = {n.metadata.name for n in cluster.core.list_node().items}
    new = [n for n in nodes if n["metadata"]["name"] not in existing]  # type: ignore[index]
    if new:
        listed = {"apiVersion": "v1", "kind": "List", "items": new}
        cluster.kubectl("create", "-f", "-", input=json.dumps(listed))
    names = [str(n["metadata"]["name"]) for n in nodes]  # type: ignore[index]

    def ready() -> bool:
        found = {n.metadata.name: n for n in cluster.core.list_node(
            label_selector="=".join(POOL_LABEL)).items}  # fmt: skip
        return all(
            any(c.type == "Ready" and c.status == "True" for c in found[n].status.conditions or [])
            for n in names
            if n in found
        ) and len(found) == len(names)

    wait_until(ready, timeout=60, what="the tests' simulated nodes to be Ready")
    yield names
    for name in [str(n["metadata"]["name"]) for n in new]:  # type: ignore[index]
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


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
