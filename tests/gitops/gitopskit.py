"""Helpers for the GitOps tests: the site repository (real git, pushed to the bare repository
Argo CD's git daemon serves), Argo CD Applications read through the API server, and the
application controller's own metrics."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import urllib3
import yaml
from clusterkit import Cluster, OperatorProcess, wait_until
from kubernetes import client, watch

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "argoproj.io", "v1alpha1"
NAMESPACE = "argocd"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "edgemodel tests",
    "GIT_AUTHOR_EMAIL": "tests@edgemodel.local",
    "GIT_COMMITTER_NAME": "edgemodel tests",
    "GIT_COMMITTER_EMAIL": "tests@edgemodel.local",
}
GOOD_IMAGE = "edgemodel-server:{version}-cpu"
# A KWOK stage keeps pods of an image whose reference contains "never-ready" unready
# (hack/kwok/stages/): a version whose model never loads.
BROKEN_IMAGE = "edgemodel-server:{version}-never-ready"
DEADLINE = 10  # rollout.progressDeadlineSeconds of the test EdgeModels, the API's minimum
RESYNC = 2  # the test operator's EDGEMODEL_RESYNC_SECONDS
# Retries of a failed sync: kept short so that the tests count them in seconds.
RETRY = {"limit": 2, "backoff": {"duration": "2s", "factor": 2, "maxDuration": "8s"}}
# (what, seconds) for the summary at the end of the run.
TIMINGS: list[tuple[str, float]] = []


def gitops_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gitops.py"), *args], text=True, capture_output=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hack/gitops.py {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def edgemodel(name: str, namespace: str, version: str, *, broken: bool = False) -> str:
    """An EdgeModel as a site repository holds it: sync wave 1, so Argo CD applies it only
    after wave 0 (the chart, with the CRD) is healthy. Its pods are pinned to the simulated
    nodes: only they know the never-ready trick, and nothing here needs a real image."""
    image = (BROKEN_IMAGE if broken else GOOD_IMAGE).format(version=version)
    em = {
        "apiVersion": "edgeai.dev/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"argocd.argoproj.io/sync-wave": "1"},
        },
        "spec": {
            "model": {
                "uri": f"file:///models/{name}/{version}/model.onnx",
                "sha256": "3b5d5c3712955042212316173ccf37be800d0a4bf2c6e8d1c0a7f3dd0c6b0f5e",
                "version": version,
                "format": "onnx",
            },
            "targets": [
                {
                    "name": "cpu",
                    "accelerator": "cpu",
                    "precision": "int8",
                    "placement": "replicas",
                    "replicas": 2,
                    "image": image,
                    "nodeSelector": {"type": "kwok"},
                }
            ],
            # Promotion after periodSeconds x failureThreshold = 4 s of readiness.
            "serving": {"probe": {"periodSeconds": 2, "failureThreshold": 2}},
            "rollout": {"progressDeadlineSeconds": DEADLINE},
        },
    }
    return yaml.safe_dump(em, sort_keys=False)


@dataclass
class SiteRepo:
    """A clone of the site repository; commit() pushes to the bare repository that the git
    daemon serves to Argo CD."""

    bare: Path
    work: Path

    def __post_init__(self) -> None:
        if not (self.work / ".git").exists():
            self.git("clone", "--quiet", str(self.bare), str(self.work), cwd=self.work.parent)

    def git(self, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=cwd or self.work, text=True, capture_output=True,
            env={**os.environ, **GIT_ENV},
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.strip()

    def write(self, rel: str, text: str) -> None:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "--quiet", "-m", message)
        return self.push()

    def revert(self, commit: str) -> str:
        self.git("revert", "--no-edit", commit)
        return self.push()

    def push(self) -> str:
        self.git("pull", "--quiet", "--rebase", "origin", "main")
        self.git("push", "--quiet", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")


@dataclass
class ArgoCD:
    """The live Argo CD: its Applications as the API server holds them."""

    cluster: Cluster
    info: dict[str, Any]

    @cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.cluster.api)

    @property
    def cluster_server(self) -> str:
        return str(self.info["clusterServer"])

    def repo(self, name: str) -> dict[str, str]:
        return dict(self.info["repositories"][name])

    def app(self, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "applications", name
            )
        )

    def apps(self, selector: str) -> list[dict[str, Any]]:
        return list(
            self.custom.list_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "applications", label_selector=selector
            )["items"]
        )

    def create(self, plural: str, obj: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, obj)

    def exists(self, plural: str, name: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
        except client.ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def delete(self, plural: str, name: str) -> None:
        """Delete without cascading: none of these objects carries Argo CD's resources
        finalizer, so the chart's CRD (shared with everything else in the cluster) stays."""
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
        except client.ApiException as err:
            if err.status != 404:
                raise

    def refresh(self, name: str) -> None:
        """A hard refresh: compare with Git now, bypassing the repo server's caches."""
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "applications", name,
            {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}},
        )  # fmt: skip

    def sync_operations(self, name: str) -> dict[str, int]:
        """argocd_app_sync_total of the application controller: sync operations that ended,
        by phase (Succeeded, Failed, Error), for one Application."""
        with urllib.request.urlopen(self.info["controllerMetrics"], timeout=10) as rsp:
            text = rsp.read().decode()
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if not line.startswith("argocd_app_sync_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if labels.get("name") == name and labels.get("dry_run", "false") == "false":
                phase = labels.get("phase", "")
                counts[phase] = counts.get(phase, 0) + int(float(line.rsplit(" ", 1)[1]))
        return counts


def resource(app: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    for res in app.get("status", {}).get("resources", []):
        if res.get("kind") == kind and res.get("name") == name:
            return dict(res)
    raise AssertionError(f"{kind}/{name} is not among the resources of {app['metadata']['name']}")


def revisions(app: dict[str, Any]) -> list[str]:
    """The Git commits an Application is synced to (one per source)."""
    sync = app.get("status", {}).get("sync", {})
    return list(sync.get("revisions") or [sync.get("revision", "")])


def operation(app: dict[str, Any]) -> dict[str, Any]:
    return dict(app.get("status", {}).get("operationState") or {})


def self_heals(app: dict[str, Any]) -> int:
    """How many of the syncs to the current commits were self-heals: Argo CD counts them on
    the operation (each one carries the count of the one before, plus one)."""
    sync = operation(app).get("operation", {}).get("sync", {})
    return int(sync.get("autoHealAttemptsCount", 0))


def operation_revisions(app: dict[str, Any]) -> list[str]:
    result = operation(app).get("syncResult") or {}
    return list(result.get("revisions") or [result.get("revision", "")])


@dataclass(frozen=True)
class Sample:
    """One version of an Application, as the API server stored it."""

    at: float  # time.monotonic() when the watch delivered it
    app: dict[str, Any]

    @property
    def sync(self) -> str:
        return str(self.app.get("status", {}).get("sync", {}).get("status", ""))

    @property
    def revisions(self) -> list[str]:
        return revisions(self.app)

    @property
    def health(self) -> str:
        return str(self.app.get("status", {}).get("health", {}).get("status", ""))

    @property
    def phase(self) -> str:
        return str(operation(self.app).get("phase", ""))


class Recorder:
    """Every version of one Application from the moment it is made, through a watch: what
    the Application was at each moment, not only at the end, and not only when polled."""

    def __init__(self, argocd: ArgoCD, name: str) -> None:
        self.argocd, self.name = argocd, name
        self.samples: list[Sample] = []
        self._changed = threading.Condition()
        self._stopped = False
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        version = None
        while not self._stopped:
            try:
                for event in self._watch.stream(
                    self.argocd.custom.list_namespaced_custom_object, GROUP, VERSION,
                    NAMESPACE, "applications", field_selector=f"metadata.name={self.name}",
                    resource_version=version, timeout_seconds=30,
                ):  # fmt: skip
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    with self._changed:
                        self.samples.append(Sample(time.monotonic(), obj))
                        self._changed.notify_all()
            except client.ApiException as err:
                if err.status != 410:  # a stale resourceVersion: list again
                    raise
                version = None
            except urllib3.exceptions.HTTPError:
                if self._stopped:  # stop() closed the connection
                    return

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()

    def until(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        """The first recorded version for which check(application) holds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for sample in self.samples[seen:]:
                    if check(sample.app):
                        return sample.app
                seen = len(self.samples)
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.samples[-1].app.get("status") if self.samples else None
                    raise AssertionError(
                        f"timed out after {timeout:.0f}s waiting for {what}; last status:\n"
                        f"{dump(last)}"
                    )
                self._changed.wait(min(left, 1.0))


def start_operator(
    cluster: Cluster, namespaces: list[str], log: Path, health_port: int
) -> OperatorProcess:
    """The operator as a host process watching exactly these namespaces (pods here cannot
    reach the API server, so the chart's own pod cannot do the work)."""
    proc = OperatorProcess(
        argv=[sys.executable, "-m", "edgemodel_operator"],
        env={
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "EDGEMODEL_NAMESPACES": ",".join(namespaces),
            "EDGEMODEL_HEALTH_ADDRESS": f"127.0.0.1:{health_port}",
            "EDGEMODEL_RESYNC_SECONDS": str(RESYNC),
        },
        log=log,
        health=f"http://127.0.0.1:{health_port}/healthz",
    )
    proc.start()
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_namespace(cluster: Cluster, name: str) -> None:
    cluster.core.create_namespace(
        {"metadata": {"name": name,
                      "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )  # fmt: skip
    wait_until(lambda: cluster.core.list_namespaced_service_account(name).items,
               timeout=30, what=f"the default ServiceAccount in {name}")  # fmt: skip


def get_em(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            "edgeai.dev", "v1alpha1", namespace, "edgemodels", name
        )
    )


def condition(em: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in em.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return {}


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:4000]
