"""Fixtures for the Helm chart tests: the pinned helm binary (built once by
hack/build-helm.sh), the EdgeModel CRD and releases installed into the local cluster."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chartkit import CHART, CRD, ROOT, SITE, Helm, Release, create_namespace
from clusterkit import Cluster


@pytest.fixture(scope="session")
def helm() -> Helm:
    """The pinned helm, built from its Go module on first use (about a minute, once)."""
    out = subprocess.run([str(ROOT / "hack" / "build-helm.sh")], text=True, capture_output=True)
    if out.returncode != 0:
        raise AssertionError(f"hack/build-helm.sh failed:\n{out.stderr}")
    return Helm(binary=Path(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="session")
def cluster_helm(helm: Helm, cluster: Cluster) -> Helm:
    """helm talking to the local cluster as its admin."""
    return Helm(binary=helm.binary, kubeconfig=cluster.kubeconfig)


@pytest.fixture(scope="session")
def chart_crd(cluster: Cluster) -> Path:
    """The EdgeModel CRD, applied the way the chart README says (before helm install)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/edgemodels.edgeai.dev"
    )
    return CRD


@pytest.fixture(scope="module")
def install(
    cluster: Cluster, cluster_helm: Helm, chart_crd: Path
) -> Iterator[Callable[..., Release]]:
    """install(watch_namespaces=0, *set_args): helm install the chart into a fresh
    edgemodel-system-<random> namespace, with that many fresh namespaces to watch (0 means
    cluster-wide). Everything is uninstalled and deleted at the end of the module."""
    releases: list[Release] = []
    namespaces: list[str] = []

    def _install(watch_namespaces: int = 0, *set_args: str) -> Release:
        suffix = uuid.uuid4().hex[:6]
        namespace = create_namespace(cluster, f"edgemodel-system-{suffix}")
        namespaces.append(namespace)
        watch = []
        for i in range(watch_namespaces):
            watch.append(create_namespace(cluster, f"edgemodel-work-{suffix}-{i}"))
            namespaces.append(watch[-1])
        release = Release(name=f"em-{suffix}", namespace=namespace, watch=tuple(watch))
        args = ["install", release.name, str(CHART), "--namespace", namespace, *SITE]
        if watch:
            args += ["--set", "watchNamespaces={" + ",".join(watch) + "}"]
        for value in set_args:
            args += ["--set", value]
        cluster_helm.run(*args)
        releases.append(release)
        return release

    yield _install
    for release in releases:
        cluster_helm.run("uninstall", release.name, "--namespace", release.namespace, check=False)
    for namespace in namespaces:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
