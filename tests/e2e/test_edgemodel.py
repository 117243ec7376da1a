"""EdgeModel end to end: kubectl apply of the samples, the operator reconciling them on
the local cluster, the real scheduler placing pods, and the API server's validation."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from clusterkit import POOL_LABEL, Cluster, OperatorProcess, e2e_labeled, wait_until
from kubernetes import client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GROUP, VERSION, PLURAL = "edgeai.dev", "v1alpha1", "edgemodels"
SHA = "3b5d5c3712955042212316173ccf37be800d0a4bf2c6e8d1c0a7f3dd0c6b0f5e"

pytestmark = pytest.mark.usefixtures("operator")


def custom(cluster: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api)


def get_em(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return custom(cluster).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def condition(em: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (em.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def wait_condition(
    cluster: Cluster, namespace: str, name: str, type_: str, status: str, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        em = get_em(cluster, namespace, name)
        cond = condition(em, type_)
        gen_ok = em.get("status", {}).get("observedGeneration") == em["metadata"]["generation"]
        return em if cond and cond["status"] == status and gen_ok else None

    return wait_until(check, timeout=timeout, what=f"{name} {type_}={status}")


def minimal(name: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "file:///models/digits/1.0.0/model.onnx", "sha256": SHA,
                      "version": "1.0.0"},
            "targets": targets,
        },
    }  # fmt: skip


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any] | Path) -> str:
    """kubectl apply, labeled for the tests' operator (clusterkit.E2E_LABEL)."""
    if isinstance(manifest, Path):
        manifest = yaml.safe_load(manifest.read_text())
    labeled = e2e_labeled(dict(manifest))
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(labeled))


def node_accelerators(cluster: Cluster) -> dict[str, str]:
    """The accelerator of each node of the tests' pool (where their targets run)."""
    return {
        n.metadata.name: n.metadata.labels.get("edgeai.dev/accelerator", "")
        for n in cluster.core.list_node(label_selector="=".join(POOL_LABEL)).items
    }


def pods_of(cluster: Cluster, namespace: str, model: str, target: str) -> list[Any]:
    selector = f"edgeai.dev/edgemodel={model},edgeai.dev/target={target}"
    return cluster.core.list_namespaced_pod(namespace, label_selector=selector).items


def test_cpu_sample_runs_replicas_on_cpu_nodes_and_reports_ready(
    cluster: Cluster, namespace: str
) -> None:
    sample = yaml.safe_load((EXAMPLES / "cpu-replicas.yaml").read_text())
    name, target = sample["metadata"]["name"], sample["spec"]["targets"][0]
    apply(cluster, namespace, EXAMPLES / "cpu-replicas.yaml")
    em = wait_condition(cluster, namespace, name, "Ready", "True")

    dep = cluster.apps.read_namespaced_deployment(f"{name}-{target['name']}", namespace)
    assert dep.spec.replicas == target["replicas"]
    owner = dep.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("EdgeModel", name, True)
    assert dep.metadata.labels["app.kubernetes.io/managed-by"] == "edgemodel-operator"
    pods = pods_of(cluster, namespace, name, target["name"])
    accelerators = node_accelerators(cluster)
    assert len(pods) == target["replicas"]
    assert {accelerators[p.spec.node_name] for p in pods} == {"cpu"}

    status = em["status"]
    assert status["phase"] == "Ready"
    assert status["targetsReady"] == "1/1"
    (t,) = status["targets"]
    assert (t["desired"], t["ready"]) == (target["replicas"], target["replicas"])
    assert sorted(t["nodes"]) == sorted({p.spec.node_name for p in pods})
    assert condition(em, "Degraded")["status"] == "False"

    table = cluster.kubectl("get", "em", name, "-n", namespace)
    header, row = table.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "READY", "PHASE", "VERSION"]
    assert row.split()[1:5] == ["True", "Ready", sample["spec"]["model"]["version"], "1/1"]

    reasons = {
        e.reason
        for e in cluster.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        ).items
    }
    assert "Created" in reasons


def test_npu_sample_runs_one_pod_per_npu_node(cluster: Cluster, namespace: str) -> None:
    sample = yaml.safe_load((EXAMPLES / "npu-per-node.yaml").read_text())
    name, target = sample["metadata"]["name"], sample["spec"]["targets"][0]["name"]
    apply(cluster, namespace, EXAMPLES / "npu-per-node.yaml")
    em = wait_condition(cluster, namespace, name, "Ready", "True")

    npu_nodes = sorted(n for n, acc in node_accelerators(cluster).items() if acc == "npu")
    ds = cluster.apps.read_namespaced_daemon_set(f"{name}-{target}", namespace)
    assert ds.status.desired_number_scheduled == len(npu_nodes)
    pods = pods_of(cluster, namespace, name, target)
    assert sorted(p.spec.node_name for p in pods) == npu_nodes
    (t,) = em["status"]["targets"]
    assert sorted(t["nodes"]) == npu_nodes
    assert t["nodeCount"] == len(npu_nodes)
    # Restricted Pod Security (the namespace enforces it) and the NPU resource request.
    container = pods[0].spec.containers[0]
    assert container.resources.limits["edgeai.dev/npu"] == "1"
    assert container.security_context.allow_privilege_escalation is False
    assert container.readiness_probe.http_get.path == "/v2/health/ready"


def test_mixed_sample_places_each_accelerator_on_its_hardware(
    cluster: Cluster, namespace: str
) -> None:
    sample = yaml.safe_load((EXAMPLES / "mixed-fleet.yaml").read_text())
    name = sample["metadata"]["name"]
    apply(cluster, namespace, EXAMPLES / "mixed-fleet.yaml")
    em = wait_condition(cluster, namespace, name, "Ready", "True")
    accelerators = node_accelerators(cluster)
    for target in sample["spec"]["targets"]:
        pods = pods_of(cluster, namespace, name, target["name"])
        assert pods, target["name"]
        assert {accelerators[p.spec.node_name] for p in pods} == {target["accelerator"]}
    n = len(sample["spec"]["targets"])
    assert em["status"]["targetsReady"] == f"{n}/{n}"


def test_missing_hardware_is_reported_and_fallback_runs_on_cpu(
    cluster: Cluster, namespace: str
) -> None:
    nowhere = {"edgeai.dev/site": "nowhere"}
    stuck = minimal("stuck", [{"name": "jetson", "accelerator": "gpu", "placement": "perNode",
                               "nodeSelector": nowhere}])  # fmt: skip
    # No GPU node is a small x86 box: a GPU target bound to those finds none and falls back
    # to the CPU nodes of that kind (its own nodeSelector still applies to its fallback).
    small = {"node.kubernetes.io/instance-type": "edge-x86-small"}
    rescued = minimal("rescued", [{"name": "jetson", "accelerator": "gpu", "precision": "fp16",
                                   "placement": "perNode", "fallback": "cpu",
                                   "nodeSelector": small}])  # fmt: skip
    apply(cluster, namespace, stuck)
    apply(cluster, namespace, rescued)

    em = wait_condition(cluster, namespace, "stuck", "Degraded", "True")
    degraded = condition(em, "Degraded")
    assert degraded["reason"] == "NoMatchingNodes"
    assert "edgeai.dev/accelerator=gpu" in degraded["message"]
    assert condition(em, "Ready")["status"] == "False"
    wait_until(
        lambda: any(e.reason == "NoMatchingNodes" for e in cluster.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=stuck,type=Warning").items),
        timeout=15, what="a NoMatchingNodes Warning Event",
    )  # fmt: skip

    em = wait_condition(cluster, namespace, "rescued", "Ready", "True")
    (t,) = em["status"]["targets"]
    assert (t["requestedAccelerator"], t["accelerator"]) == ("gpu", "cpu")
    assert "cpu" in condition(em, "Degraded")["message"]
    accelerators = node_accelerators(cluster)
    pods = pods_of(cluster, namespace, "rescued", "jetson")
    assert pods and {accelerators[p.spec.node_name] for p in pods} == {"cpu"}


def test_more_replicas_than_gpus_says_which_pods_cannot_be_scheduled(
    cluster: Cluster, namespace: str
) -> None:
    gpus = sum(1 for acc in node_accelerators(cluster).values() if acc == "gpu")
    apply(cluster, namespace, minimal("greedy", [{"name": "gpu", "accelerator": "gpu",
                                                  "replicas": gpus + 1}]))  # fmt: skip
    em = wait_condition(cluster, namespace, "greedy", "Degraded", "True")
    degraded = condition(em, "Degraded")
    assert degraded["reason"] == "Unschedulable"
    assert "pod(s) cannot be scheduled" in degraded["message"]
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    assert em["status"]["phase"] == "Degraded"
    (t,) = em["status"]["targets"]
    assert t["desired"] == gpus + 1 and t["nodeCount"] <= gpus  # one pod per exclusive GPU


def test_drift_is_repaired(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, minimal("drift", [{"name": "cpu", "accelerator": "cpu",
                                                 "replicas": 2}]))  # fmt: skip
    wait_condition(cluster, namespace, "drift", "Ready", "True")
    original = cluster.apps.read_namespaced_deployment("drift-cpu", namespace)

    cluster.apps.patch_namespaced_deployment("drift-cpu", namespace, {"spec": {"replicas": 5}})
    wait_until(
        lambda: cluster.apps.read_namespaced_deployment("drift-cpu", namespace).spec.replicas == 2,
        timeout=30,
        what="replicas edited by hand to be restored to 2",
    )
    cluster.apps.delete_namespaced_deployment("drift-cpu", namespace)
    recreated = wait_until(
        lambda: next(
            (d for d in cluster.apps.list_namespaced_deployment(namespace).items
             if d.metadata.name == "drift-cpu" and d.metadata.uid != original.metadata.uid),
            None,
        ),
        timeout=30,
        what="the deleted Deployment to be recreated",
    )  # fmt: skip
    assert recreated.metadata.owner_references[0].name == "drift"


def test_removing_a_target_deletes_its_workload_and_deleting_the_model_collects_all(
    cluster: Cluster, namespace: str
) -> None:
    targets = [
        {"name": "cpu", "accelerator": "cpu", "replicas": 1},
        {"name": "npu", "accelerator": "npu", "placement": "perNode"},
    ]
    two = minimal("shrink", targets)
    apply(cluster, namespace, two)
    wait_condition(cluster, namespace, "shrink", "Ready", "True")
    assert cluster.apps.read_namespaced_daemon_set("shrink-npu", namespace)

    one = copy.deepcopy(two)
    one["spec"]["targets"] = one["spec"]["targets"][:1]
    apply(cluster, namespace, one)
    wait_until(
        lambda: not cluster.apps.list_namespaced_daemon_set(namespace).items,
        timeout=30,
        what="the DaemonSet of the removed target to be deleted",
    )
    em = wait_condition(cluster, namespace, "shrink", "Ready", "True")
    assert [t["name"] for t in em["status"]["targets"]] == ["cpu"]

    cluster.kubectl("delete", "em", "shrink", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_until(
        lambda: (
            not cluster.apps.list_namespaced_deployment(namespace).items
            and not cluster.core.list_namespaced_pod(namespace).items
        ),
        timeout=60,
        what="the garbage collector to remove the Deployment and its pods",
    )
    time.sleep(3 * 2)  # three resync periods: nothing comes back for a deleted model
    assert not cluster.apps.list_namespaced_deployment(namespace).items


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["model"].update(sha256="abc123"), "sha256"),
        (lambda s: s["targets"].append({"name": "cpu", "accelerator": "gpu"}), "unique"),
        (lambda s: s["targets"][0].update(precision="fp16"), "fp16"),
        (lambda s: s["targets"][0].update(placement="perNode", replicas=2), "replicas"),
        (lambda s: s["targets"][0].update(fallback="cpu"), "fallback"),
        (lambda s: s["targets"][0].update(accelerator="tpu"), "accelerator"),
        (lambda s: s["model"].update(uri="ftp://example/model.onnx"), "uri"),
    ],
    ids=["bad-sha256", "duplicate-target", "fp16-on-cpu", "replicas-with-perNode",
         "fallback-to-itself", "unknown-accelerator", "bad-uri-scheme"],
)  # fmt: skip
def test_api_server_rejects_invalid_specs_with_a_clear_message(
    cluster: Cluster, namespace: str, mutate: Any, message: str
) -> None:
    em = minimal("invalid", [{"name": "cpu", "accelerator": "cpu"}])
    mutate(em["spec"])
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(em), check=False)
    assert "is invalid" in out, out
    assert message in out, out
    assert not custom(cluster).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
        "items"
    ]


def test_accelerator_of_a_target_is_immutable(cluster: Cluster, namespace: str) -> None:
    em = minimal("fixed", [{"name": "edge", "accelerator": "cpu"}])
    apply(cluster, namespace, em)
    em["spec"]["targets"][0]["accelerator"] = "npu"
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(em), check=False)
    assert "is invalid" in out and "accelerator" in out, out


def test_kubectl_explain_teaches_the_api(cluster: Cluster, crd: Path) -> None:
    out = cluster.kubectl("explain", "edgemodel.spec.targets")
    for field in ("accelerator", "placement", "precision", "fallback", "replicas"):
        assert field in out
    assert "DESCRIPTION" in out
    assert len(out.split("DESCRIPTION:")[1].split("FIELDS:")[0].strip()) > 40


def test_operator_restart_duplicates_nothing_and_keeps_serving(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, minimal("steady", [{"name": "cpu", "accelerator": "cpu",
                                                  "replicas": 2}]))  # fmt: skip
    before = wait_condition(cluster, namespace, "steady", "Ready", "True")
    uid = cluster.apps.read_namespaced_deployment("steady-cpu", namespace).metadata.uid
    operator.kill()
    operator.start()
    time.sleep(6)  # the restarted operator resumes, then runs a few 2-second timer ticks
    deployments = cluster.apps.list_namespaced_deployment(namespace).items
    assert [(d.metadata.name, d.metadata.uid) for d in deployments] == [("steady-cpu", uid)]
    after = wait_condition(cluster, namespace, "steady", "Ready", "True")
    ready_before = condition(before, "Ready")["lastTransitionTime"]
    assert condition(after, "Ready")["lastTransitionTime"] == ready_before
