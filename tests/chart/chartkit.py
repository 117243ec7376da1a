"""Helpers for the Helm chart tests: paths, a helm runner and an installed release."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from clusterkit import Cluster, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgemodel-operator"
CRD = ROOT / "crds" / "edgemodels.edgeai.dev.yaml"


@dataclass(frozen=True)
class Helm:
    binary: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run helm; a failure shows helm's own error output."""
        argv = [str(self.binary), *args]
        if self.kubeconfig is not None:
            argv.append(f"--kubeconfig={self.kubeconfig}")
        proc = subprocess.run(argv, text=True, capture_output=True)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def template(self, *args: str, release: str = "edgemodel", namespace: str = "edgemodel") -> str:
        return self.run(
            "template", release, str(CHART), "--namespace", namespace, *SITE, *args
        ).stdout


# The one value a site must give: its registry, where `make images` published the servers.
SITE = ("--set", "registry.url=registry.local:5000/edgeai")


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str  # where the operator Deployment and its ServiceAccount live
    watch: tuple[str, ...]  # watchNamespaces; empty: cluster-wide

    @property
    def fullname(self) -> str:
        return f"{self.name}-edgemodel-operator"

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def create_namespace(cluster: Cluster, name: str) -> str:
    """A namespace that enforces Pod Security "restricted", as the chart must pass it."""
    cluster.core.create_namespace(
        {"metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    wait_until(
        lambda: cluster.core.list_namespaced_service_account(name).items,
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    return name
