"""The Kubernetes API gateway: server-side apply and delete of the operator's children
(workloads, Services, NetworkPolicies), deletion of single pods (how a wave moves a node of
a DaemonSet to a new revision) and the active probe's pod condition.

Reads go through kopf's watch-fed indices (see handlers/); this module only writes. Every
call has a timeout: a hung connection must not hang a reconcile."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config

FIELD_MANAGER = "edgemodel-operator"
TIMEOUT = (5.0, 30.0)  # seconds to connect, seconds to read the answer (EDGEMODEL_API_*)


class KubeGateway:
    def __init__(self, api: client.ApiClient, timeout: tuple[float, float] = TIMEOUT) -> None:
        self._api = api
        self._timeout = timeout
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        net = client.NetworkingV1Api(api)
        self._patch: dict[str, Callable[..., Any]] = {
            "Deployment": apps.patch_namespaced_deployment,
            "DaemonSet": apps.patch_namespaced_daemon_set,
            "Service": core.patch_namespaced_service,
            "NetworkPolicy": net.patch_namespaced_network_policy,
        }
        self._delete: dict[str, Callable[..., Any]] = {
            "Deployment": apps.delete_namespaced_deployment,
            "DaemonSet": apps.delete_namespaced_daemon_set,
            "Service": core.delete_namespaced_service,
            "NetworkPolicy": net.delete_namespaced_network_policy,
            "Pod": core.delete_namespaced_pod,
        }
        self._core = core

    @property
    def api(self) -> client.ApiClient:
        return self._api

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply a child we own; returns the stored object."""
        meta = obj["metadata"]
        result = self._patch[obj["kind"]](
            meta["name"],
            meta["namespace"],
            dict(obj),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
            _request_timeout=self._timeout,
        )
        return dict(self._api.sanitize_for_serialization(result))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._delete[kind](
                name, namespace, propagation_policy="Background", _request_timeout=self._timeout
            )
        except client.ApiException as err:
            if err.status != 404:  # already gone is what we wanted
                raise

    def set_pod_condition(self, namespace: str, pod: str, condition: Mapping[str, Any]) -> None:
        """Set one condition of a pod's status (a readiness gate's); others stay."""
        try:
            self._core.patch_namespaced_pod_status(
                pod, namespace, {"status": {"conditions": [dict(condition)]}},
                _request_timeout=self._timeout,
            )  # fmt: skip
        except client.ApiException as err:
            if err.status != 404:  # the pod went away meanwhile
                raise


def connect(timeout: tuple[float, float] = TIMEOUT) -> KubeGateway:
    """In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return KubeGateway(client.ApiClient(), timeout)
