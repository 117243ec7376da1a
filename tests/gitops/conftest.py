"""Fixtures for the GitOps tests: a live Argo CD (hack/gitops.py) next to the local cluster.

A running Argo CD is reused (and brought up to date: objects, chart repository) and left
running; one started here is stopped at the end of the session (GITOPS_KEEP=1 keeps it)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from clusterkit import Cluster  # noqa: E402
from gitopskit import TIMINGS, ArgoCD, SiteRepo, gitops_cli  # noqa: E402


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("gitops")
        for what, seconds in TIMINGS:
            terminalreporter.write_line(f"{seconds:7.1f}s  {what}")


@pytest.fixture(scope="session")
def argocd(cluster: Cluster) -> Iterator[ArgoCD]:
    started_here = gitops_cli("status", check=False).returncode != 0
    t0 = time.monotonic()
    gitops_cli("up")
    TIMINGS.append((f"gitops up ({'cold' if started_here else 'already running'})",
                    time.monotonic() - t0))  # fmt: skip
    info = json.loads(gitops_cli("info").stdout)
    yield ArgoCD(cluster=cluster, info=info)
    if started_here and not os.environ.get("GITOPS_KEEP"):
        gitops_cli("down", check=False)


@pytest.fixture(scope="module")
def site_repo(argocd: ArgoCD, tmp_path_factory: pytest.TempPathFactory) -> SiteRepo:
    work = tmp_path_factory.mktemp("site-repo") / "sites"
    return SiteRepo(bare=Path(argocd.repo("sites")["path"]), work=work)
