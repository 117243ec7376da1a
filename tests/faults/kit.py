"""The fault suite's own cluster (never the shared one), the operator run as the chart's
ServiceAccount through a fault proxy, and what a user checks after a fault: the spec as
applied, status, the revision every workload serves, Events without duplicates."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from clusterkit import Cluster, OperatorProcess, pod_ready, wait_until
from faultproxy import FaultProxy, free_port, tls_upstream
from kubernetes import client

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "edgemodels.edgeai.dev.yaml"
CHART = ROOT / "charts" / "edgemodel-operator"
GROUP, VERSION, PLURAL = "edgeai.dev", "v1alpha1", "edgemodels"
SHARED_PORT_BASE = 16400
SYSTEM = "edgemodel-system"  # where the operator's ServiceAccount (and Lease) live
RELEASE = "faults"  # the chart's release name: names its ClusterRole and ServiceAccount
SERVICE_ACCOUNT = f"{RELEASE}-edgemodel-operator"
TEST_LABEL = "edgeai.dev/faults-test"
RESYNC = 2  # EDGEMODEL_RESYNC_SECONDS of the operators under test
DEADLINE = 10  # rollout.progressDeadlineSeconds: the smallest the API allows


def devcluster(state: Path, port_base: int, *args: str) -> None:
    if port_base == SHARED_PORT_BASE:
        raise RuntimeError("refusing port base 16400: that is the shared cluster")
    subprocess.run(
        [sys.executable, str(ROOT / "hack" / "devcluster.py"), *args,
         f"--state-dir={state}", f"--port-base={port_base}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


@dataclass
class FaultCluster(Cluster):
    """A private cluster: hack/devcluster.py with its own state dir and port base."""

    state: Path = Path()
    port_base: int = 0
    token: str = ""  # the operator ServiceAccount's token

    @property
    def apiserver_port(self) -> int:
        return self.port_base + 43

    @property
    def ca_file(self) -> Path:
        return self.state / "pki" / "ca.crt"

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def restart_apiserver(self, down_seconds: float) -> None:
        devcluster(self.state, self.port_base, "restart-apiserver",
                   f"--down-seconds={down_seconds}")  # fmt: skip

    def proxy(self) -> FaultProxy:
        """A fault proxy in front of the API server (TLS upstream, no client certificate)."""
        return FaultProxy(
            tls_upstream("127.0.0.1", self.apiserver_port, str(self.ca_file)), "apiserver-proxy"
        ).start()

    def operator_kubeconfig(self, proxy: FaultProxy, path: Path) -> Path:
        """The operator's kubeconfig: plain HTTP to the proxy, the ServiceAccount's token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "faults", "cluster": {"server": proxy.url}}],
            "users": [{"name": SERVICE_ACCOUNT, "user": {"token": self.token}}],
            "contexts": [
                {"name": "faults", "context": {"cluster": "faults", "user": SERVICE_ACCOUNT}}
            ],
            "current-context": "faults",
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path


def start_cluster(fleet: str) -> FaultCluster:
    port_base = int(os.environ.get("FAULTS_PORT_BASE", "17400"))
    state = Path(tempfile.mkdtemp(prefix="edgemodel-faults-"))
    devcluster(state, port_base, "up", f"--fleet={fleet}", "--real-nodes=0")
    cluster = FaultCluster(
        kubeconfig=state / "kubeconfig", kubectl_path=(state / "bin" / "kubectl").resolve(),
        state=state, port_base=port_base,
    )  # fmt: skip
    cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    cluster.wait_established()
    install_rbac(cluster)
    return cluster


def stop_cluster(cluster: FaultCluster) -> None:
    if os.environ.get("FAULTS_KEEP"):
        print(f"\nfault cluster kept: KUBECONFIG={cluster.kubeconfig}", file=sys.stderr)
        return
    with contextlib.suppress(subprocess.CalledProcessError):
        devcluster(cluster.state, cluster.port_base, "down")
    shutil.rmtree(cluster.state, ignore_errors=True)


def helm_binary() -> Path:
    out = subprocess.run([str(ROOT / "hack" / "build-helm.sh")], text=True,
                         capture_output=True, check=True)  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def chart_rbac() -> list[dict[str, Any]]:
    """The chart's ServiceAccount, ClusterRole, leader-election Role (two replicas) and
    bindings as `helm template` renders them for a cluster-wide install: the operator runs
    with exactly the rights a site gives it."""
    rendered = subprocess.run(
        [str(helm_binary()), "template", RELEASE, str(CHART), "--namespace", SYSTEM,
         "--set", "registry.url=registry.local:5000/edgeai", "--set", "replicas=2",
         "--show-only", "templates/serviceaccount.yaml",
         "--show-only", "templates/leader-election.yaml",
         "--show-only", "templates/clusterrole.yaml",
         "--show-only", "templates/clusterrolebinding.yaml"],
        text=True, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def install_rbac(cluster: FaultCluster) -> None:
    cluster.kubectl("create", "namespace", SYSTEM)
    objects = chart_rbac()
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                           "items": objects}))  # fmt: skip
    cluster.token = cluster.kubectl("create", "token", SERVICE_ACCOUNT, "-n", SYSTEM,
                                    "--duration=6h").strip()  # fmt: skip


# --- the operator ----------------------------------------------------------------------


@dataclass
class Operator:
    """One operator process under test, talking to the API server through `proxy`."""

    process: OperatorProcess
    proxy: FaultProxy
    metrics: str
    selector: str

    @property
    def log(self) -> Path:
        return self.process.log

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as rsp:
            text = rsp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            series, value = line.rsplit(" ", 1)
            if series.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def alive(self) -> bool:
        return self.process.proc is not None and self.process.proc.poll() is None

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out


def start_operator(
    cluster: FaultCluster, proxy: FaultProxy, workdir: Path, selector: str, **env: str
) -> Operator:
    health, metrics = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = cluster.operator_kubeconfig(proxy, workdir / f"kubeconfig-{health}")
    process = OperatorProcess(
        argv=[sys.executable, "-m", "edgemodel_operator"],
        env={
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "EDGEMODEL_HEALTH_ADDRESS": f"127.0.0.1:{health}",
            "EDGEMODEL_METRICS_ADDRESS": f"127.0.0.1:{metrics}",
            "EDGEMODEL_RESYNC_SECONDS": str(RESYNC),
            "EDGEMODEL_SELECTOR": f"{TEST_LABEL}={selector}",
            "EDGEMODEL_API_TIMEOUT_SECONDS": "5",
            "EDGEMODEL_API_CONNECT_TIMEOUT_SECONDS": "2",
            "EDGEMODEL_WATCH_INACTIVITY_SECONDS": "10",
            "EDGEMODEL_WATCH_TIMEOUT_SECONDS": "60",
            # Targets bring their own images: nothing to resolve (and no registry to ask).
            "EDGEMODEL_SERVER_IMAGE": "127.0.0.1:9/edgemodel-server:none-{accelerator}",
            **env,
        },
        log=workdir / f"operator-{health}.log",
        health=f"http://127.0.0.1:{health}/healthz",
    )
    process.start()
    return Operator(process, proxy, f"127.0.0.1:{metrics}", selector)


# --- EdgeModels and what a user checks -------------------------------------------------


@dataclass
class Site:
    """One test's namespace and the label its operator selects."""

    cluster: FaultCluster
    namespace: str
    selector: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def edgemodel(
        self, name: str, image: str, targets: list[dict[str, Any]] | None = None,
        version: str = "1.0.0", **spec: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """An EdgeModel whose targets run their own image (nothing to build)."""
        targets = targets or [{"name": "cpu", "accelerator": "cpu", "replicas": 2}]
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "EdgeModel",
            "metadata": {"name": name, "labels": {TEST_LABEL: self.selector}},
            "spec": {
                "model": {"uri": f"https://models.example.com/{name}/{version}/model.onnx",
                          "sha256": "ab" * 32, "version": version},
                "targets": [{**t, "image": image} for t in targets],
                "serving": {"probe": {"periodSeconds": 2, "failureThreshold": 2}},
                "rollout": {"progressDeadlineSeconds": DEADLINE},
                **spec,
            },
        }  # fmt: skip

    def apply(self, em: dict[str, Any]) -> dict[str, Any]:
        """kubectl apply as a user would (the admin, straight to the API server)."""
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(em))
        return self.get(em["metadata"]["name"])

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name))  # fmt: skip

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def wait(self, name: str, check: Any, timeout: float, what: str) -> dict[str, Any]:
        """Wait until check(em) holds for the EdgeModel; returns it."""

        def probe() -> dict[str, Any] | None:
            em = self.get(name)
            return em if check(em) else None

        try:
            return wait_until(probe, timeout=timeout, what=f"{name}: {what}", every=0.5)
        except AssertionError as err:  # say where it stood: a scenario is slow to rerun
            raise AssertionError(f"{err}\n{self.brief(name)}\n{self.timeline(name)}") from None

    def brief(self, name: str) -> str:
        """The EdgeModel's phase, rollout and conditions (its node lists left out)."""
        status = self.status(name)
        rollout = {k: v for k, v in (status.get("rollout") or {}).items() if k != "heldNodes"}
        lines = [f"phase {status.get('phase')}, revision {status.get('revision')}, "
                 f"stable {status.get('stableRevision')}, rollout {rollout}"]  # fmt: skip
        lines += [f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
                  for c in status.get("conditions") or []]  # fmt: skip
        for w in self.workloads(name).values():
            counts = {k: v for k, v in w.status.to_dict().items() if v is not None}
            lines.append(f"{type(w).__name__.removeprefix('V1')} {w.metadata.name}: "
                         f"generation {w.metadata.generation}, status {counts}")  # fmt: skip
        return "\n".join(lines)

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about the EdgeModel, oldest first."""
        items = self.cluster.core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind=EdgeModel",
        ).items
        # Timestamps have whole seconds: within one, the order of creation is etcd's.
        items.sort(key=lambda e: (e.metadata.creation_timestamp, int(e.metadata.resource_version)))
        return [(e.type, e.reason, e.message) for e in items for _ in range(e.count or 1)]

    def timeline(self, name: str, proxy: FaultProxy | None = None) -> str:
        """Events (and the proxy's log) in time order: the message of a failed assertion."""
        items = self.cluster.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        lines = [(e.metadata.creation_timestamp.timestamp(), f"event {e.type} {e.reason}: "
                  f"{e.message}") for e in items]  # fmt: skip
        if proxy is not None:
            lines += [(x.at, f"proxy {x.method} {x.target[:110]} -> {x.outcome}")
                      for x in proxy.log if "watch=true" not in x.target]  # fmt: skip
        start = min((t for t, _ in lines), default=0.0)
        return "\n".join(f"{t - start:7.2f} {text}" for t, text in sorted(lines))

    def workloads(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for d in self.cluster.apps.list_namespaced_deployment(
            self.namespace, label_selector=f"edgeai.dev/edgemodel={name}").items:  # fmt: skip
            found[d.metadata.name] = d
        for d in self.cluster.apps.list_namespaced_daemon_set(
            self.namespace, label_selector=f"edgeai.dev/edgemodel={name}").items:  # fmt: skip
            found[d.metadata.name] = d
        return found

    def pods(self, name: str) -> list[Any]:
        return list(self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector=f"edgeai.dev/edgemodel={name}").items)  # fmt: skip


def condition(em: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (em.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def is_true(em: dict[str, Any], type_: str) -> bool:
    return condition(em, type_).get("status") == "True"


def current(em: dict[str, Any]) -> bool:
    return (em.get("status") or {}).get("observedGeneration") == em["metadata"]["generation"]


def promoted(em: dict[str, Any]) -> bool:
    status = em.get("status") or {}
    return (
        current(em)
        and bool(status.get("stableRevision"))
        and (status["stableRevision"] == status.get("revision"))
    )


def serves(site: Site, name: str, revision: str, image: str) -> bool:
    """Every workload of the EdgeModel runs `revision` with `image`, and every pod it has
    runs that revision and is Ready: what `kubectl get pods` would show a user."""
    workloads = site.workloads(name)
    if not workloads:
        return False
    for w in workloads.values():
        template = w.spec.template
        if template.metadata.annotations.get("edgeai.dev/revision") != revision:
            return False
        if template.spec.containers[0].image != image:
            return False
    pods = [p for p in site.pods(name) if p.metadata.deletion_timestamp is None]
    return bool(pods) and all(
        p.metadata.annotations.get("edgeai.dev/revision") == revision and pod_ready(p)
        and p.spec.containers[0].image == image
        for p in pods
    )  # fmt: skip


# Events that happen once per revision (their message names it): any repeat is a duplicate.
ONCE = {"Created", "Updated", "Deleted", "Promoted", "RolledBack", "ReplacedPods"}


def duplicates(events: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    """Events posted twice for one happening: a once-per-revision Event repeated, or a
    transition (Ready, NotReady, Degraded, ...) posted again with no other in between."""
    once = Counter(e for e in events if e[1] in ONCE)
    found = {e: n for e, n in once.items() if n > 1}
    transitions = [e for e in events if e[1] not in ONCE]
    for before, after in itertools.pairwise(transitions):
        if before == after:
            found[after] = found.get(after, 1) + 1
    return found


def applied_spec_kept(site: Site, em: dict[str, Any]) -> bool:
    """The operator never writes the spec: what the user applied is what is stored."""
    stored = site.get(em["metadata"]["name"])["spec"]
    wanted = em["spec"]

    def subset(a: Any, b: Any) -> bool:
        if isinstance(a, dict):
            return isinstance(b, dict) and all(subset(v, b.get(k)) for k, v in a.items())
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(map(subset, a, b))
        return bool(a == b)

    return subset(wanted, stored)


@contextlib.contextmanager
def timed(results: dict[str, float], key: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        results[key] = round(time.monotonic() - started, 1)
