"""The Kubernetes API gateway: server-side apply and delete of the operator's children
(and of single pods, which is how a wave moves a node of a DaemonSet to a new revision).

Reads go through kopf's watch-fed indices (see handlers/); this module only writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

FIELD_MANAGER = "edgemodel-operator"


class KubeGateway:
    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._apps = client.AppsV1Api(api)
        self._core = client.CoreV1Api(api)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply a Deployment or DaemonSet we own; returns the stored object."""
        meta = obj["metadata"]
        patch = {
            "Deployment": self._apps.patch_namespaced_deployment,
            "DaemonSet": self._apps.patch_namespaced_daemon_set,
        }[obj["kind"]]
        result = patch(
            meta["name"],
            meta["namespace"],
            dict(obj),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        return dict(self._api.sanitize_for_serialization(result))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        delete = {
            "Deployment": self._apps.delete_namespaced_deployment,
            "DaemonSet": self._apps.delete_namespaced_daemon_set,
            "Pod": self._core.delete_namespaced_pod,
        }[kind]
        try:
            delete(name, namespace, propagation_policy="Background")
        except client.ApiException as err:
            if err.status != 404:  # already gone is what we wanted
                raise


def connect() -> KubeGateway:
    """In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return KubeGateway(client.ApiClient())
