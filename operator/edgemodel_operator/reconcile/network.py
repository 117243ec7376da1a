"""How apps reach a model: one Service per target, and optionally a NetworkPolicy that lets
in only labeled clients and the operator's probe.

A perNode target's Service keeps traffic on the node (internalTrafficPolicy: Local): the
camera app on a board calls the model server on that same board, never one across the
site's network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgemodel_operator.api.names import CLIENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MODEL_LABEL
from edgemodel_operator.api.spec import EdgeModelSpec
from edgemodel_operator.reconcile.health import pod_ready
from edgemodel_operator.reconcile.placement import Placement
from edgemodel_operator.reconcile.workloads import (
    Owner,
    child,
    pod_selector,
    target_labels,
    workload_name,
)

SERVICE_PORT_NAME = "http"


@dataclass(frozen=True)
class ProbeSource:
    """Where the operator's probe comes from, for the NetworkPolicy (when it runs in-cluster)."""

    namespace: str
    pod_labels: Mapping[str, str]


def service_name(model: str, target: str) -> str:
    return workload_name(model, target)


def build_service(owner: Owner, spec: EdgeModelSpec, placement: Placement) -> dict[str, Any]:
    local = placement.target.placement == "perNode"
    service_spec = {
        "type": "ClusterIP",
        "selector": pod_selector(owner, placement),
        "ports": [
            {
                "name": SERVICE_PORT_NAME,
                "port": spec.serving.port,
                "targetPort": SERVICE_PORT_NAME,
                "protocol": "TCP",
            }
        ],
        "internalTrafficPolicy": "Local" if local else "Cluster",
    }
    name = service_name(owner.name, placement.target.name)
    return child(owner, "v1", "Service", name, target_labels(owner, spec, placement), service_spec)


def network_policy_name(model: str) -> str:
    return f"{model}-clients"


def build_network_policy(
    owner: Owner, spec: EdgeModelSpec, probe: ProbeSource | None
) -> dict[str, Any]:
    """Ingress to the model's pods on the serving port from pods labeled
    edgeai.dev/client=<model> (any namespace) and from the operator's probe."""
    peers: list[dict[str, Any]] = [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {CLIENT_LABEL: owner.name}}}
    ]
    if probe is not None:
        peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": probe.namespace}
                },
                "podSelector": {"matchLabels": dict(probe.pod_labels)},
            }
        )
    policy = {
        "podSelector": {"matchLabels": {MODEL_LABEL: owner.name}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": [{"port": spec.serving.port, "protocol": "TCP"}]}],
    }
    labels = {MANAGED_BY_LABEL: MANAGED_BY, MODEL_LABEL: owner.name}
    name = network_policy_name(owner.name)
    return child(owner, "networking.k8s.io/v1", "NetworkPolicy", name, labels, policy)


def ready_endpoints(pods: Sequence[Mapping[str, Any]]) -> int:
    """Ready endpoints of a target's Service: its pods (the Service selects them all) that
    are Ready, not terminating and have an IP, as the EndpointSlice controller publishes
    them. Counted from the pods the operator watches anyway, not from the EndpointSlices:
    a 1,500-node target's slices are rewritten at every pod change, each decoded whole."""
    return sum(
        1
        for p in pods
        if pod_ready(p)
        and not (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("podIP")
    )
