"""Services, the optional NetworkPolicy, endpoint counts, architecture placement and the
active probe's bookkeeping: pure functions, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fixtures import FLEET, spec
from test_workloads import OWNER, SETTINGS

from edgemodel_operator.api.accelerators import DEFAULT_PROFILES
from edgemodel_operator.api.spec import parse_spec
from edgemodel_operator.reconcile.network import (
    ProbeSource,
    build_network_policy,
    build_service,
    ready_endpoints,
)
from edgemodel_operator.reconcile.observed import node_info
from edgemodel_operator.reconcile.placement import for_architectures, place
from edgemodel_operator.reconcile.probes import probe_calls, probe_condition, with_conditions
from edgemodel_operator.reconcile.workloads import build_workload

NODES = [node_info(n) for n in FLEET]


def placed(**target: Any) -> tuple[Any, Any]:
    parsed = parse_spec(spec({"name": "t", "accelerator": "cpu", **target}))
    return parsed, place(parsed.targets[0], NODES, DEFAULT_PROFILES)


def test_a_service_per_target_local_for_per_node_ones() -> None:
    parsed, placement = placed(replicas=2)
    service = build_service(OWNER, parsed, placement)
    assert service["metadata"]["name"] == "digits-t"
    assert service["spec"]["selector"] == {"edgeai.dev/edgemodel": "digits",
                                           "edgeai.dev/target": "t"}  # fmt: skip
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                         "protocol": "TCP"}]  # fmt: skip
    assert service["spec"]["internalTrafficPolicy"] == "Cluster"
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    parsed, per_node = placed(placement="perNode")
    assert build_service(OWNER, parsed, per_node)["spec"]["internalTrafficPolicy"] == "Local"


def test_the_network_policy_admits_labeled_clients_and_the_probe() -> None:
    parsed, _ = placed()
    source = ProbeSource("edgemodel-system", {"app.kubernetes.io/name": "edgemodel-operator"})
    policy = build_network_policy(OWNER, parsed, source)
    assert policy["metadata"]["name"] == "digits-clients"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"edgeai.dev/edgemodel": "digits"}}
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert rule["from"][0]["podSelector"] == {"matchLabels": {"edgeai.dev/client": "digits"}}
    assert rule["from"][1]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "edgemodel-system"}}  # fmt: skip
    assert len(build_network_policy(OWNER, parsed, None)["spec"]["ingress"][0]["from"]) == 1


def test_ready_endpoints_are_ready_pods_with_an_ip_not_terminating() -> None:
    def pod(ready: bool = True, ip: str | None = "10.0.0.1", deleting: bool = False) -> Any:
        meta = {"deletionTimestamp": "2026-12-02T10:00:00Z"} if deleting else {}
        cond = {"type": "Ready", "status": "True" if ready else "False"}
        return {"metadata": meta, "status": {"conditions": [cond], "podIP": ip}}

    assert ready_endpoints([pod(), pod(), pod(ready=False), pod(ip=None), pod(deleting=True)]) == 2
    assert ready_endpoints([]) == 0


def test_an_image_runs_only_on_the_architectures_it_serves() -> None:
    parsed, gpu = placed(accelerator="gpu", precision="fp16", placement="perNode")
    assert gpu.nodes == ("gpu-0", "gpu-1")  # Jetsons: arm64
    amd64_only = for_architectures(gpu, ["amd64"], NODES)
    assert (amd64_only.nodes, amd64_only.no_image) == ((), ("gpu-0", "gpu-1"))
    assert "the gpu/fp16 image serves amd64 only" in amd64_only.message
    both = for_architectures(gpu, ["amd64", "arm64"], NODES)
    assert (both.nodes, both.no_image) == (("gpu-0", "gpu-1"), ())
    affinity = build_workload(OWNER, parsed, both, SETTINGS, "r")["spec"]["template"]["spec"][
        "affinity"
    ]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert affinity["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]  # fmt: skip
    assert for_architectures(gpu, None, NODES) is gpu  # not known: unchanged


def pod(name: str, *, gated: bool = True, ready: bool = True, passed: str | None = None,
        ip: str = "10.1.0.1", deleting: bool = False) -> dict[str, Any]:  # fmt: skip
    conditions = [{"type": "ContainersReady", "status": "True" if ready else "False"}]
    if passed is not None:
        conditions.append({"type": "edgeai.dev/probe-passed", "status": passed})
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "readinessGates": [{"conditionType": "edgeai.dev/probe-passed"}] if gated else [],
            "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {"podIP": ip, "conditions": conditions},
    }


def test_probes_go_to_gated_running_pods_that_have_not_passed() -> None:
    pods = [
        pod("b-new"), pod("a-failed", passed="False"), pod("c-passed", passed="True"),
        pod("d-starting", ready=False), pod("e-ungated", gated=False),
        pod("f-going", deleting=True), pod("g-no-ip", ip=""),
    ]  # fmt: skip
    calls = probe_calls(pods)
    assert [c.pod for c in calls] == ["a-failed", "b-new"]
    assert calls[0].port == 8080 and len(probe_calls(pods * 20, limit=3)) == 3
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    failed = probe_condition("an inference answered 500", now)
    assert (failed["status"], failed["reason"]) == ("False", "ProbeFailed")
    updated = with_conditions(pods, {"b-new": probe_condition(None, now)})
    gate = [c for c in updated[0]["status"]["conditions"] if c["type"] == "edgeai.dev/probe-passed"]
    assert gate[0]["status"] == "True" and pods[0]["status"]["conditions"][-1]["type"] == (
        "ContainersReady"
    )  # the input is not changed


def test_a_target_whose_image_runs_on_none_of_its_nodes_falls_back() -> None:
    parsed = parse_spec(spec({"name": "jetson", "accelerator": "gpu", "precision": "fp16",
                              "placement": "perNode", "fallback": "cpu"}))  # fmt: skip
    server_archs = {"gpu": ("amd64",), "cpu": ("amd64", "arm64")}

    def narrow(p: Any) -> Any:
        return for_architectures(p, server_archs[p.accelerator], NODES)

    placed = place(parsed.targets[0], NODES, DEFAULT_PROFILES, narrow)
    assert (placed.accelerator, placed.nodes, placed.fell_back) == ("cpu", ("cpu-0", "cpu-1"), True)
    assert "the gpu/fp16 image serves amd64 only" in placed.message
    assert "running on cpu" in placed.message
