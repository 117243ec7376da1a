"""Small helpers for e2e tests against the local edge cluster."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config

from edgemodel_operator.api.accelerators import DEFAULT_PROFILES

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]

# One test session's own label value: sessions (and a demo) may share the cluster.
SESSION = uuid.uuid4().hex[:6]
# EdgeModels of this session's tests carry this label, and its operators handle only those
# (EDGEMODEL_SELECTOR): a demo or another session in the same cluster keeps its own.
E2E_LABEL = ("edgeai.dev/e2e", SESSION)
# Where the state of the shared local cluster is (hack/devcluster.py --state-dir).
STATE = Path(os.environ.get("DEVCLUSTER_STATE") or ROOT / ".devcluster")
# Tests of the simulated fleet run on a pool of KWOK nodes of their own (tests/conftest.py,
# `pool`), tainted so that nothing else lands there: a demo in the same cluster cannot take
# their exclusive GPUs, and the real nodes, which pull and run images for real, never get
# their fake images. Their operators map every accelerator onto that pool.
POOL_LABEL = ("edgeai.dev/pool", f"e2e-{SESSION}")
POOL_PREFIX = f"e2e-{SESSION}"  # the pool's nodes: e2e-<session>-gpu-0, ...
POOL_TAINT = {"key": POOL_LABEL[0], "value": POOL_LABEL[1], "effect": "NoSchedule"}
SIMULATED_ONLY = json.dumps({
    acc: {
        "nodeSelector": {**profile.node_selector, POOL_LABEL[0]: POOL_LABEL[1]},
        "tolerations": [*profile.tolerations, {**POOL_TAINT, "operator": "Equal"}],
    }
    for acc, profile in DEFAULT_PROFILES.items()
})  # fmt: skip


def e2e_labeled(manifest: dict[str, Any]) -> dict[str, Any]:
    labels = manifest.setdefault("metadata", {}).setdefault("labels", {})
    labels[E2E_LABEL[0]] = E2E_LABEL[1]
    return manifest


def wait_until(check: Callable[[], T], *, timeout: float, what: str, every: float = 0.25) -> T:
    """Poll check() until it returns something truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
        last = check()
    return last


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_path: Path

    @cached_property
    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    def delete_namespace(self, name: str, timeout: float = 60) -> None:
        """Delete the EdgeModels first, while their operator still runs to stop their
        workers, then the namespace. Teardown hygiene: should an EdgeModel outlast the
        timeout (an operator of an earlier version put a finalizer on it and is gone), the
        finalizer is removed by hand with a warning rather than failing the test that ran."""
        self.kubectl("delete", "edgemodels.edgeai.dev", "--all", "-n", name, "--wait=false",
                     check=False)  # fmt: skip
        custom = client.CustomObjectsApi(self.api)

        def gone() -> bool:
            try:
                items = custom.list_namespaced_custom_object(
                    "edgeai.dev", "v1alpha1", name, "edgemodels"
                )["items"]
            except client.ApiException:
                return True  # no CRD installed
            return not items

        try:
            wait_until(gone, timeout=timeout, what=f"the EdgeModels in {name} to be deleted")
        except AssertionError as err:
            warnings.warn(f"{err}; removing their finalizers by hand", stacklevel=2)
            for em in custom.list_namespaced_custom_object(
                "edgeai.dev", "v1alpha1", name, "edgemodels"
            )["items"]:
                self.kubectl("patch", "edgemodels.edgeai.dev", em["metadata"]["name"], "-n", name,
                             "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                             check=False)  # fmt: skip
        finally:
            try:
                self.core.delete_namespace(name)
            except client.ApiException as err:
                if err.status != 404:  # gone already: an earlier teardown's deletion finished
                    raise

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, token: str | None = None
    ) -> str:
        """Run the pinned kubectl as the admin, or as the bearer of token."""
        kubeconfig = self.token_kubeconfig(token) if token else self.kubeconfig
        proc = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={kubeconfig}", *args],
            input=input,
            text=True,
            capture_output=True,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout + proc.stderr

    def wait_established(self, crd: str = "edgemodels.edgeai.dev", timeout: float = 60) -> None:
        """Until the CRD is served. `kubectl wait --for=condition=Established` fails at once,
        rather than waiting, on a CRD so new that its status has no conditions yet."""
        query = '{.status.conditions[?(@.type=="Established")].status}'
        wait_until(lambda: self.kubectl("get", f"crd/{crd}", "-o", f"jsonpath={query}",
                                        check=False).strip() == "True",
                   timeout=timeout, what=f"CRD {crd} to be established")  # fmt: skip

    def token_kubeconfig(self, token: str) -> Path:
        """A kubeconfig that authenticates with only this token (no admin certificate)."""
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]
        digest = hashlib.sha256(token.encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"edgemodel-e2e-token-{digest}.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [cluster],
                    "users": [{"name": "token", "user": {"token": token}}],
                    "contexts": [
                        {"name": "token", "context": {"cluster": cluster["name"], "user": "token"}}
                    ],
                    "current-context": "token",
                }
            )
        )
        path.chmod(0o600)
        return path

    def nodes_by_name(self) -> dict[str, Any]:
        return {n.metadata.name: n for n in self.core.list_node().items}


def publish_servers(accelerators: str, platforms: str) -> str:
    """`make images` for these accelerators and platforms (content-addressed: what the
    registry has is not rebuilt); EDGEMODEL_SERVER_IMAGE for the published indexes. They go
    to the image kit's registry, under REGISTRY when that is set (a path of its own keeps
    one checkout's server images apart from another's)."""
    out = subprocess.run([sys.executable, str(ROOT / "hack" / "imagekit.py"), "env"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    registry = os.environ.get("REGISTRY") or out.split("EDGEMODEL_REGISTRY=")[1].strip()
    env = {**os.environ, "PY": sys.executable, "ACCELERATORS": accelerators,
           "PLATFORMS": platforms, "REGISTRY": registry}  # fmt: skip
    subprocess.run([str(ROOT / "hack" / "images.sh")], env=env, check=True, stdout=sys.stderr)
    from edgemodel_operator import __version__

    return f"{registry}/edgemodel-server:{__version__}-{{accelerator}}"


def restricted_container(name: str, image: str, **extra: Any) -> dict[str, Any]:
    """A container spec that passes Pod Security "restricted"."""
    return {
        "name": name,
        "image": image,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **extra,
    }


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@dataclass
class OperatorProcess:
    """The operator as a real process; start() waits for its liveness endpoint."""

    argv: list[str]
    env: dict[str, str]
    log: Path
    health: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out)
        wait_until(self._healthy, timeout=60, what=f"the operator's liveness ({self.log})")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, like a node losing power."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()

    def _healthy(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(
                f"the operator exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(self.health, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False
