"""The fault-injection suite: a private cluster for the session (port base FAULTS_PORT_BASE,
default 17400; state in a temp dir; stopped at the end, FAULTS_KEEP=1 keeps it), so that
its faults (the API server restarted, 1,500 flapping nodes) disturb nobody else.

Each scenario test is marked `scenario(id, title, asserts)`; with FAULTS_RESULTS=<file>
the outcome and time of each are written there (README's reliability table)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
for _path in (HERE, HERE.parent / "e2e"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from faultproxy import FaultProxy  # noqa: E402
from kit import FaultCluster, Operator, Site, start_cluster, start_operator, stop_cluster  # noqa: E402

FLEET = "gpu=2,npu=2,cpu=4"
RESULTS: dict[str, Any] = {"scenarios": [], "started_unix": time.time()}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("scenario"):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.faults)
    # The 1,500-node scenario last: its nodes stay until the cluster goes.
    items.sort(key=lambda item: item.path.name == "test_fleet.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("scenario")
    if marker is None or not item.path.is_relative_to(HERE):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        scenario, title, asserts = marker.args
        RESULTS["scenarios"].append({
            "scenario": scenario, "test": item.name, "title": title, "asserts": asserts,
            "outcome": report.outcome, "seconds": round(report.duration, 1),
        })  # fmt: skip


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("FAULTS_RESULTS")
    if not target or not RESULTS["scenarios"]:
        return
    RESULTS["duration_s"] = round(time.time() - RESULTS["started_unix"], 1)
    RESULTS["machine"] = {"cores": os.cpu_count(), "python": platform.python_version(),
                          "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    Path(target).write_text(json.dumps(RESULTS, indent=2) + "\n")


@pytest.fixture(scope="session")
def fault_cluster() -> Iterator[FaultCluster]:
    started = time.monotonic()
    cluster = start_cluster(FLEET)
    RESULTS["cluster_start_s"] = round(time.monotonic() - started, 1)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def site(fault_cluster: FaultCluster, request: pytest.FixtureRequest) -> Iterator[Site]:
    """A fresh namespace; its EdgeModels are deleted at the end while an operator runs."""
    base = request.node.name.lower().replace("_", "-").removeprefix("test-")[:30].strip("-")
    name = f"f-{base}-{uuid.uuid4().hex[:4]}"
    fault_cluster.core.create_namespace({"metadata": {"name": name}})
    yield Site(fault_cluster, name)
    live = {n.metadata.name for n in fault_cluster.core.list_namespace().items
            if n.metadata.deletion_timestamp is None}  # fmt: skip
    if name in live:  # not already deleted by the `operators` fixture
        fault_cluster.delete_namespace(name, timeout=5)


@pytest.fixture
def proxy(fault_cluster: FaultCluster) -> Iterator[FaultProxy]:
    p = fault_cluster.proxy()
    yield p
    p.stop()


@pytest.fixture
def operators(fault_cluster: FaultCluster, site: Site, tmp_path: Path) -> Iterator[list[Operator]]:
    """Operators a test starts (start(...) below); stopped at the end of the test, after
    its EdgeModels were deleted (the `site` fixture tears down after this one)."""
    started: list[Operator] = []
    yield started
    if any(op.alive() for op in started):  # its workers see their models go
        fault_cluster.delete_namespace(site.namespace, timeout=20)
    for op in started:
        op.process.stop()
        op.proxy.stop()


@pytest.fixture
def start(
    fault_cluster: FaultCluster, site: Site, operators: list[Operator], tmp_path: Path
) -> Any:
    """start(proxy=None, **env): an operator for this test's site, through `proxy` (a
    fresh pass-through one when None)."""

    def _start(proxy: FaultProxy | None = None, **env: str) -> Operator:
        op = start_operator(fault_cluster, proxy or fault_cluster.proxy(), tmp_path,
                            site.selector, **env)  # fmt: skip
        operators.append(op)
        return op

    return _start
