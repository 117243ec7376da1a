"""The Kubernetes API gateway: server-side apply and delete of the operator's children
(workloads, Services, NetworkPolicies), deletion of single pods (how a wave moves a node of
a DaemonSet to a new revision) and the active probe's pod condition.

Reads go through kopf's watch-fed indices (see handlers/); this module writes, and reads
only one thing: a key of a Secret that a spec names (a model publisher's public key). Every
call has a timeout: a hung connection must not hang a reconcile."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

from edgemodel_operator.adapters.rest import Rest, path
from edgemodel_operator.api.names import (
    GROUP,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_LABEL,
    PLURAL,
    VERSION,
)

FIELD_MANAGER = "edgemodel-operator"
TIMEOUT = (5.0, 30.0)  # seconds to connect, seconds to read the answer (EDGEMODEL_API_*)
APPLY = {"fieldManager": FIELD_MANAGER, "force": "true"}
# Content types of a PATCH: server-side apply (JSON is YAML), JSON merge, strategic merge.
SERVER_SIDE_APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class SecretUnavailable(Exception):
    """A Secret (or its key) cannot be read; the message says which and why."""


# The kinds the operator writes: API group, version, plural.
KINDS = {
    "Deployment": ("apps", "v1", "deployments"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Service": ("", "v1", "services"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "Pod": ("", "v1", "pods"),
}


class KubeGateway:
    def __init__(self, api: client.ApiClient, timeout: tuple[float, float] = TIMEOUT) -> None:
        self._rest = Rest(api, timeout)

    @property
    def api(self) -> client.ApiClient:
        return self._rest.api

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply a child we own; returns the stored object."""
        meta = obj["metadata"]
        where = path(*KINDS[obj["kind"]], meta["namespace"], meta["name"])
        return self._rest.json("PATCH", where, dict(obj), APPLY, SERVER_SIDE_APPLY)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._rest.send("DELETE", path(*KINDS[kind], namespace, name),
                            query={"propagationPolicy": "Background"})  # fmt: skip
        except client.ApiException as err:
            if err.status != 404:  # already gone is what we wanted
                raise

    def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> bool:
        """Merge-patch an EdgeModel's status; whether it was written (False: it is gone).
        The answer, the whole EdgeModel, is not decoded: the caller knows what it wrote."""
        try:
            self._rest.send("PATCH", path(GROUP, VERSION, PLURAL, namespace, name, "status"),
                            {"status": dict(patch)}, content_type=MERGE)  # fmt: skip
        except client.ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def set_pod_condition(self, namespace: str, pod: str, condition: Mapping[str, Any]) -> None:
        """Set one condition of a pod's status (a readiness gate's); others stay."""
        try:
            self._rest.send("PATCH", path("", "v1", "pods", namespace, pod, "status"),
                            {"status": {"conditions": [dict(condition)]}},
                            content_type=STRATEGIC)  # fmt: skip
        except client.ApiException as err:
            if err.status != 404:  # the pod went away meanwhile
                raise

    def _list(self, kind: str, namespace: str, **query: str) -> list[dict[str, Any]]:
        answer = self._rest.json("GET", path(*KINDS[kind], namespace), query=query)
        return [{**item, "kind": kind} for item in answer.get("items") or []]

    def model_workloads(self, namespace: str, model: str) -> list[dict[str, Any]]:
        """The model's Deployments and DaemonSets (each with its "kind"), read now."""
        selector = _model_selector(model)
        return [item for kind in ("Deployment", "DaemonSet")
                for item in self._list(kind, namespace, labelSelector=selector)]  # fmt: skip

    def model_pods(
        self, namespace: str, model: str, nodes: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """The model's pods, read now: all of them, or those on `nodes` (a read per node)."""
        selector = _model_selector(model)
        if nodes is None:
            return self._list("Pod", namespace, labelSelector=selector)
        return [pod for node in sorted(nodes)
                for pod in self._list("Pod", namespace, labelSelector=selector,
                                      fieldSelector=f"spec.nodeName={node}")]  # fmt: skip

    def secret_value(self, namespace: str, name: str, key: str) -> bytes:
        """One key of a Secret; SecretUnavailable saying why when it cannot be read."""
        where = f"Secret {namespace}/{name}"
        try:
            secret = self._rest.json("GET", path("", "v1", "secrets", namespace, name))
        except client.ApiException as err:
            if err.status == 404:
                raise SecretUnavailable(f"{where} does not exist") from err
            if err.status == 403:
                raise SecretUnavailable(
                    f"the operator may not read {where} (the chart grants it with "
                    "modelSigning.secretKeyRefs=true)"
                ) from err
            raise
        value = (secret.get("data") or {}).get(key)
        if value is None:
            raise SecretUnavailable(f"{where} has no key {key!r}")
        return base64.b64decode(value)


def _model_selector(model: str) -> str:
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{MODEL_LABEL}={model}"


def connect(timeout: tuple[float, float] = TIMEOUT, connections: int = 16) -> KubeGateway:
    """In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config. Keeps up to
    `connections` open: one per thread that calls it (the client's default, five per core,
    made the passes' threads open and close a TLS connection per request on two cores)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return KubeGateway(client.ApiClient(configuration), timeout)
