"""The chart against the local cluster: server-side dry runs, a real install and upgrade,
the RBAC it grants (enough for the operator, nothing more)."""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chartkit import ROOT, Helm, Release, create_namespace
from clusterkit import SIMULATED_ONLY, Cluster, OperatorProcess, wait_until

from edgemodel_operator.config import DEFAULT_SERVER_IMAGE

pytestmark = pytest.mark.e2e

# (verb, resource, where): "ns" is checked in a watched namespace, "cluster" cluster-wide.
ALLOWED = [
    ("list", "edgemodels.edgeai.dev", "ns"),
    ("watch", "edgemodels.edgeai.dev", "ns"),
    ("patch", "edgemodels.edgeai.dev", "ns"),
    ("patch", "edgemodels.edgeai.dev/status", "ns"),
    ("update", "edgemodels.edgeai.dev/finalizers", "ns"),
    ("list", "deployments.apps", "ns"),
    ("watch", "deployments.apps", "ns"),
    ("create", "deployments.apps", "ns"),
    ("patch", "deployments.apps", "ns"),
    ("delete", "deployments.apps", "ns"),
    ("list", "daemonsets.apps", "ns"),
    ("watch", "daemonsets.apps", "ns"),
    ("create", "daemonsets.apps", "ns"),
    ("patch", "daemonsets.apps", "ns"),
    ("delete", "daemonsets.apps", "ns"),
    ("list", "pods", "ns"),
    ("watch", "pods", "ns"),
    ("delete", "pods", "ns"),
    ("patch", "pods/status", "ns"),
    ("list", "services", "ns"),
    ("watch", "services", "ns"),
    ("create", "services", "ns"),
    ("patch", "services", "ns"),
    ("delete", "services", "ns"),
    ("create", "events", "ns"),
    ("list", "nodes", "cluster"),
    ("watch", "nodes", "cluster"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
]
DENIED = [
    ("get", "secrets", "ns"),
    ("list", "secrets", "ns"),
    ("update", "deployments.apps", "ns"),
    ("get", "deployments.apps", "ns"),
    ("create", "pods", "ns"),
    ("update", "pods/status", "ns"),
    ("create", "endpointslices.discovery.k8s.io", "ns"),
    ("watch", "endpointslices.discovery.k8s.io", "ns"),  # ready endpoints come from the pods
    ("create", "networkpolicies.networking.k8s.io", "ns"),
    ("patch", "nodes", "cluster"),
    ("get", "nodes", "cluster"),
    ("delete", "edgemodels.edgeai.dev", "ns"),
    ("create", "edgemodels.edgeai.dev", "ns"),
    ("update", "edgemodels.edgeai.dev", "ns"),
    ("update", "edgemodels.edgeai.dev/status", "ns"),
    ("patch", "events", "ns"),
    ("create", "configmaps", "ns"),
    ("create", "serviceaccounts/token", "ns"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
    ("*", "*", "cluster"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dry_run_apply(cluster: Cluster, manifests: str) -> str:
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests)


def can_i(cluster: Cluster, release: Release, verb: str, resource: str, namespace: str) -> bool:
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={release.user}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["--all-namespaces"] if namespace == "*" else ["--namespace", namespace]
    out = cluster.kubectl(*args, check=False).strip().splitlines()
    return bool(out) and out[0] == "yes"


def test_dry_run_server_defaults(helm: Helm, cluster: Cluster, chart_crd: Path) -> None:
    ns = create_namespace(cluster, f"edgemodel-system-{uuid.uuid4().hex[:6]}")
    try:
        rendered = helm.template("--include-crds", release="dry", namespace=ns)
        out = dry_run_apply(cluster, rendered)
        for what in ("serviceaccount/", "clusterrole.rbac", "clusterrolebinding.rbac",
                     "deployment.apps/", "customresourcedefinition.apiextensions"):  # fmt: skip
            assert what in out, out
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_dry_run_server_watch_namespaces(helm: Helm, cluster: Cluster, chart_crd: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    ns = create_namespace(cluster, f"edgemodel-system-{suffix}")
    watched = [create_namespace(cluster, f"edgemodel-work-{suffix}-{i}") for i in range(2)]
    try:
        rendered = helm.template(
            "--set", "watchNamespaces={" + ",".join(watched) + "}",
            "--set", "metrics.enabled=true",
            release="dry", namespace=ns,
        )  # fmt: skip
        out = dry_run_apply(cluster, rendered)
        lines = out.splitlines()
        assert sum(x.startswith("role.rbac.authorization.k8s.io/") for x in lines) == 2, out
        assert sum(x.startswith("rolebinding.rbac.authorization.k8s.io/") for x in lines) == 2
        assert "service/dry-edgemodel-operator-metrics" in out
    finally:
        for name in (ns, *watched):
            cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_install_then_upgrade(
    install: Callable[..., Release], cluster: Cluster, cluster_helm: Helm
) -> None:
    release = install(0)
    deployment = cluster.apps.read_namespaced_deployment(release.fullname, release.namespace)
    assert deployment.spec.replicas == 1
    assert deployment.spec.strategy.type == "Recreate"
    pod = deployment.spec.template.spec
    assert pod.automount_service_account_token is True
    assert pod.service_account_name == release.service_account
    ctx = pod.containers[0].security_context
    assert (ctx.run_as_non_root, ctx.run_as_user) == (True, 65532)
    assert (ctx.read_only_root_filesystem, ctx.allow_privilege_escalation) == (True, False)
    assert ctx.capabilities.drop == ["ALL"]
    assert ctx.seccomp_profile.type == "RuntimeDefault"
    # The namespace enforces Pod Security "restricted": a pod exists only if it passed.
    selector = f"app.kubernetes.io/instance={release.name}"
    wait_until(
        lambda: cluster.core.list_namespaced_pod(release.namespace, label_selector=selector).items,
        timeout=60,
        what=f"the operator pod admitted in {release.namespace} (Pod Security restricted)",
    )

    cluster_helm.run(
        "upgrade", release.name, str(ROOT / "charts" / "edgemodel-operator"),
        "--namespace", release.namespace, "--reuse-values", "--set", "logLevel=DEBUG",
    )  # fmt: skip
    status = json.loads(
        cluster_helm.run("status", release.name, "-n", release.namespace, "-o", "json").stdout
    )
    assert (status["version"], status["info"]["status"]) == (2, "deployed")
    deployment = cluster.apps.read_namespaced_deployment(release.fullname, release.namespace)
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["EDGEMODEL_LOG_LEVEL"] == "DEBUG"
    assert deployment.metadata.generation >= 2


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_rbac_is_minimal(install: Callable[..., Release], cluster: Cluster, mode: str) -> None:
    release = install(1 if mode == "namespaced" else 0)
    other = "default"  # a namespace the namespaced install must not reach
    allowed_ns = release.watch[0] if release.watch else other
    wrong: list[str] = []
    for verb, resource, where in ALLOWED:
        ns = allowed_ns if where == "ns" else "*"
        if not can_i(cluster, release, verb, resource, ns):
            wrong.append(f"cannot {verb} {resource} in {ns}")
    for verb, resource, where in DENIED:
        ns = allowed_ns if where == "ns" else "*"
        if can_i(cluster, release, verb, resource, ns):
            wrong.append(f"can {verb} {resource} in {ns}")
    if release.watch:
        for verb, resource, _ in (r for r in ALLOWED if r[2] == "ns"):
            if can_i(cluster, release, verb, resource, other):
                wrong.append(f"can {verb} {resource} in {other} (not watched)")
        for verb in ("list", "watch"):
            if not can_i(cluster, release, verb, "namespaces", "*"):
                wrong.append(f"cannot {verb} namespaces")
    elif can_i(cluster, release, "list", "namespaces", "*"):
        wrong.append("can list namespaces (only the namespaced mode needs it)")
    assert not wrong, f"RBAC of {release.user} ({mode}):\n  " + "\n  ".join(wrong)


def condition(em: dict[str, Any], type_: str) -> dict[str, Any]:
    conds = (em.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == type_), {})


def test_operator_reconciles_with_the_chart_rbac(
    install: Callable[..., Release], cluster: Cluster, tmp_path: Path, pool: list[str]
) -> None:
    """The operator, run as the chart's ServiceAccount (a TokenRequest token, no admin
    certificate), reconciles an EdgeModel to Ready, renames its target (a create and a
    delete) and logs no permission error. It keeps the default server image, so that an
    operator of another test session on the shared cluster (which sees every namespace)
    writes the same objects instead of fighting over them."""
    release = install(1)
    work = release.watch[0]
    token = cluster.core.create_namespaced_service_account_token(
        release.service_account, release.namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    kubeconfig = cluster.token_kubeconfig(token)
    denied = cluster.kubectl("get", "secrets", "-n", work, token=token, check=False)
    assert "Forbidden" in denied, denied  # the kubeconfig really is the ServiceAccount

    port = free_port()
    log = tmp_path / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "EDGEMODEL_NAMESPACES": work,
        "EDGEMODEL_HEALTH_ADDRESS": f"127.0.0.1:{port}",
        "EDGEMODEL_RESYNC_SECONDS": "2",
        "EDGEMODEL_ACCELERATORS": SIMULATED_ONLY,  # the sample's fake model runs simulated
        "EDGEMODEL_ACTIVE_PROBE": "true",  # as the chart runs it (pods/status)
    }
    proc = OperatorProcess(
        argv=[sys.executable, "-m", "edgemodel_operator"],
        env=env,
        log=log,
        health=f"http://127.0.0.1:{port}/healthz",
    )
    proc.start()
    try:
        cluster.kubectl("apply", "-n", work, "-f", str(ROOT / "examples" / "cpu-replicas.yaml"))
        expected = DEFAULT_SERVER_IMAGE.format(accelerator="cpu")
        wait_for_ready(cluster, work, "digits-cpu", "cpu", expected, log)

        cluster.kubectl(
            "patch", "edgemodel", "digits-cpu", "-n", work, "--type=json",
            "-p", '[{"op": "replace", "path": "/spec/targets/0/name", "value": "main"}]',
        )  # fmt: skip
        wait_for_ready(cluster, work, "digits-cpu", "main", expected, log)
        wait_until(
            lambda: (
                not cluster.apps.list_namespaced_deployment(
                    work, field_selector="metadata.name=digits-cpu-cpu"
                ).items
            ),
            timeout=60,
            what="the Deployment of the renamed target to be deleted",
        )
        # Deleted while the operator runs: its worker stops, with nothing it is not allowed.
        cluster.kubectl("delete", "edgemodel", "digits-cpu", "-n", work, "--timeout=60s")
    finally:
        proc.stop()
    text = log.read_text()
    for bad in ("Forbidden", " 403", '"403', "Not enough permissions", "Unauthorized"):
        assert bad not in text, f"the operator logged {bad!r}:\n{text[-4000:]}"
    assert f'"namespace": "{work}"' in text, f"the operator logged nothing for {work}:\n{text}"


def wait_for_ready(
    cluster: Cluster, namespace: str, name: str, target: str, image: str, log: Path
) -> None:
    def ready() -> bool:
        em = json.loads(cluster.kubectl("get", "edgemodel", name, "-n", namespace, "-o", "json"))
        targets = {t["name"]: t for t in (em.get("status") or {}).get("targets") or []}
        return (
            condition(em, "Ready").get("status") == "True"
            and targets.get(target, {}).get("image") == image
            and em["status"].get("observedGeneration") == em["metadata"]["generation"]
        )

    try:
        wait_until(ready, timeout=90, every=1, what=f"{name} Ready with target {target} on {image}")
    except AssertionError as err:
        em = cluster.kubectl("get", "edgemodel", name, "-n", namespace, "-o", "yaml", check=False)
        raise AssertionError(f"{err}\n{em}\noperator log:\n{log.read_text()[-4000:]}") from None
    deployment = cluster.apps.read_namespaced_deployment(f"{name}-{target}", namespace)
    assert deployment.spec.template.spec.containers[0].image == image
