"""The local edge cluster is real: a real scheduler places pods by labels, resources and
taints, real controllers garbage-collect, and kwok moves pods through the test stages."""

from __future__ import annotations

import time
from typing import Any

from clusterkit import POOL_LABEL, POOL_TAINT, Cluster, pod_ready, restricted_container, wait_until
from kubernetes import client


def deployment(name: str, *, replicas: int, pod_spec: dict[str, Any], labels: dict[str, str]):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, **labels}}, "spec": pod_spec},
        },
    }


def on_pool(*images: str) -> dict[str, Any]:
    """A pod spec pinned to this session's KWOK pool: a real node would try to pull these
    fake images and never run them."""
    return {
        "nodeSelector": {POOL_LABEL[0]: POOL_LABEL[1]},
        "tolerations": [{**POOL_TAINT, "operator": "Equal"}],
        "containers": [restricted_container("server", image) for image in images],
    }


def pods_of(cluster: Cluster, namespace: str, app: str) -> list[Any]:
    return cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items


def test_fleet_has_labeled_gpu_npu_and_cpu_nodes(cluster: Cluster) -> None:
    # The cluster's own fleet: not the pools that test sessions add (edgeai.dev/pool).
    nodes = cluster.core.list_node(label_selector="type=kwok,!edgeai.dev/pool").items
    by_accelerator: dict[str, list[Any]] = {}
    for node in nodes:
        by_accelerator.setdefault(node.metadata.labels["edgeai.dev/accelerator"], []).append(node)
    assert {"gpu", "npu", "cpu"} <= by_accelerator.keys()
    for node in nodes:
        labels = node.metadata.labels
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["kubernetes.io/arch"] in {"amd64", "arm64"}
        assert labels["node.kubernetes.io/instance-type"]
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert {g.metadata.labels["kubernetes.io/arch"] for g in by_accelerator["gpu"]} == {
        "arm64", "amd64"}  # Jetsons and x86 boxes with a card  # fmt: skip
    for gpu in by_accelerator["gpu"]:
        assert gpu.status.capacity["nvidia.com/gpu"] == "1"
        assert [t.key for t in gpu.spec.taints] == ["nvidia.com/gpu"]
    for npu in by_accelerator["npu"]:
        assert npu.status.capacity["edgeai.dev/npu"] == "4"  # shared NPU slots
    for cpu in by_accelerator["cpu"]:
        assert "nvidia.com/gpu" not in cpu.status.capacity


def test_npu_selector_binds_pods_only_to_npu_nodes_and_they_become_ready(
    cluster: Cluster, namespace: str
) -> None:
    pod_spec = {
        "nodeSelector": {"edgeai.dev/accelerator": "npu"},
        "containers": [restricted_container("server", "example.local/server:1")],
    }
    cluster.apps.create_namespaced_deployment(
        namespace, deployment("npu-app", replicas=4, pod_spec=pod_spec, labels={})
    )
    wait_until(
        lambda: (
            (d := cluster.apps.read_namespaced_deployment("npu-app", namespace)).status
            and d.status.ready_replicas == 4
        ),
        timeout=60,
        what="4 ready replicas of npu-app",
    )
    nodes = cluster.nodes_by_name()
    pods = pods_of(cluster, namespace, "npu-app")
    assert len(pods) == 4
    for pod in pods:
        assert nodes[pod.spec.node_name].metadata.labels["edgeai.dev/accelerator"] == "npu"
        assert pod_ready(pod)


def test_gpu_request_lands_only_on_gpu_nodes_and_respects_capacity(
    cluster: Cluster, namespace: str, pool: list[str]
) -> None:
    # This session's own GPU nodes: their capacity is known (no demo holds their GPUs).
    gpu_nodes = [
        n for n in cluster.core.list_node(label_selector="=".join(POOL_LABEL)).items
        if n.metadata.labels.get("edgeai.dev/accelerator") == "gpu"
    ]  # fmt: skip
    gpu_pod_spec = {
        "nodeSelector": {POOL_LABEL[0]: POOL_LABEL[1]},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {**POOL_TAINT, "operator": "Equal"},
        ],
        "containers": [
            restricted_container(
                "server", "example.local/server:1", resources={"limits": {"nvidia.com/gpu": "1"}}
            )
        ],
    }
    # One more replica than there are GPUs: the scheduler must leave exactly one Pending.
    replicas = len(gpu_nodes) + 1
    cluster.apps.create_namespaced_deployment(
        namespace, deployment("gpu-app", replicas=replicas, pod_spec=gpu_pod_spec, labels={})
    )
    wait_until(
        lambda: (
            sum(bool(p.spec.node_name) for p in pods_of(cluster, namespace, "gpu-app"))
            == len(gpu_nodes)
        ),
        timeout=60,
        what=f"{len(gpu_nodes)} gpu-app pods bound",
    )
    time.sleep(2)  # give the scheduler a chance to (wrongly) bind the extra replica
    pods = pods_of(cluster, namespace, "gpu-app")
    bound = [p for p in pods if p.spec.node_name]
    nodes = cluster.nodes_by_name()
    assert len(pods) == replicas
    assert sorted(p.spec.node_name for p in bound) == sorted(n.metadata.name for n in gpu_nodes)
    for pod in bound:
        assert nodes[pod.spec.node_name].metadata.labels["edgeai.dev/accelerator"] == "gpu"
    events = cluster.core.list_namespaced_event(
        namespace, field_selector="reason=FailedScheduling"
    ).items
    assert any("nvidia.com/gpu" in (e.message or "") for e in events)


def test_gpu_taint_keeps_untolerating_pods_off_gpu_nodes(cluster: Cluster, namespace: str) -> None:
    pod_spec = {
        "nodeSelector": {"edgeai.dev/accelerator": "gpu"},
        "containers": [restricted_container("server", "example.local/server:1")],
    }
    cluster.apps.create_namespaced_deployment(
        namespace, deployment("no-toleration", replicas=1, pod_spec=pod_spec, labels={})
    )
    wait_until(
        lambda: (
            cluster.core.list_namespaced_event(
                namespace, field_selector="reason=FailedScheduling"
            ).items
        ),
        timeout=60,
        what="a FailedScheduling event",
    )
    (pod,) = pods_of(cluster, namespace, "no-toleration")
    assert pod.spec.node_name is None
    assert pod.status.phase == "Pending"


def test_deleting_an_owner_garbage_collects_its_children(
    cluster: Cluster, namespace: str, pool: list[str]
) -> None:
    pod_spec = on_pool("example.local/server:1")
    cluster.apps.create_namespaced_deployment(
        namespace, deployment("owned", replicas=2, pod_spec=pod_spec, labels={})
    )
    wait_until(
        lambda: len(pods_of(cluster, namespace, "owned")) == 2, timeout=60, what="2 owned pods"
    )
    assert cluster.apps.list_namespaced_replica_set(namespace).items
    cluster.apps.delete_namespaced_deployment(
        "owned", namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )
    wait_until(
        lambda: (
            not cluster.apps.list_namespaced_replica_set(namespace).items
            and not pods_of(cluster, namespace, "owned")
        ),
        timeout=60,
        what="the garbage collector to delete the ReplicaSet and its pods",
    )


def test_never_ready_stage_keeps_marked_pods_running_but_not_ready(
    cluster: Cluster, namespace: str, pool: list[str]
) -> None:
    healthy = on_pool("example.local/server:1")
    by_label = on_pool("example.local/server:1")
    by_image = on_pool("example.local/server:2-never-ready")
    marked = {"kwok.edgeai.dev/behavior": "never-ready"}
    for name, spec, labels in [
        ("healthy", healthy, {}),
        ("by-label", by_label, marked),
        ("by-image", by_image, {}),
    ]:
        cluster.apps.create_namespaced_deployment(
            namespace, deployment(name, replicas=1, pod_spec=spec, labels=labels)
        )
    for app in ("healthy", "by-label", "by-image"):
        wait_until(
            lambda app=app: [
                p for p in pods_of(cluster, namespace, app) if p.status.phase == "Running"
            ],
            timeout=60,
            what=f"{app} to be Running",
        )
    time.sleep(3)  # readiness must not arrive late either
    assert pod_ready(pods_of(cluster, namespace, "healthy")[0])
    for app in ("by-label", "by-image"):
        (pod,) = pods_of(cluster, namespace, app)
        assert pod.status.phase == "Running"
        assert not pod_ready(pod)
        assert pod.status.container_statuses[0].state.running is not None
    dep = cluster.apps.read_namespaced_deployment("by-image", namespace)
    assert not dep.status.ready_replicas


def test_turns_not_ready_stage_flips_ready_pods_after_the_delay(
    cluster: Cluster, namespace: str, pool: list[str]
) -> None:
    pod_spec = on_pool("example.local/server:1")
    dep = deployment(
        "flaky",
        replicas=1,
        pod_spec=pod_spec,
        labels={"kwok.edgeai.dev/behavior": "turns-not-ready"},
    )
    dep["spec"]["template"]["metadata"]["annotations"] = {"kwok.edgeai.dev/not-ready-after": "3s"}
    cluster.apps.create_namespaced_deployment(namespace, dep)
    wait_until(
        lambda: any(pod_ready(p) for p in pods_of(cluster, namespace, "flaky")),
        timeout=60,
        what="the flaky pod to become Ready first",
    )
    became_ready = time.monotonic()
    wait_until(
        lambda: [p for p in pods_of(cluster, namespace, "flaky") if p.status.phase == "Running"
                 and not pod_ready(p)],
        timeout=30,
        what="the flaky pod to turn NotReady",
    )  # fmt: skip
    assert time.monotonic() - became_ready >= 2.0


def test_rbac_is_enforced_for_service_account_tokens(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = cluster.core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"audiences": [], "expirationSeconds": 600}}
    ).status.token
    can_list = cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, token=token, check=False
    )
    assert can_list.strip().startswith("no")
    cluster.kubectl(
        "create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace
    )
    cluster.kubectl(
        "create", "rolebinding", "nobody-reads", "--role=pod-reader",
        f"--serviceaccount={namespace}:nobody", "-n", namespace,
    )  # fmt: skip
    assert wait_until(
        lambda: (
            cluster.kubectl(
                "auth", "can-i", "list", "pods", "-n", namespace, token=token, check=False
            )
            .strip()
            .startswith("yes")
        ),
        timeout=10,
        what="the RoleBinding to grant list pods",
    )
