"""The Kubernetes API gateway: server-side apply and delete of the operator's children
(workloads, Services, NetworkPolicies), deletion of single pods (how a wave moves a node of
a DaemonSet to a new revision) and the active probe's pod condition.

Reads go through kopf's watch-fed indices (see handlers/); this module writes, and reads
only one thing: a key of a Secret that a spec names (a model publisher's public key). Every
call has a timeout: a hung connection must not hang a reconcile."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config

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


class SecretUnavailable(Exception):
    """A Secret (or its key) cannot be read; the message says which and why."""


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
        self._core, self._apps = core, apps
        self._custom = client.CustomObjectsApi(api)

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
            _preload_content=False,
        )
        return _json(result)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            _drain(self._delete[kind](
                name, namespace, propagation_policy="Background",
                _request_timeout=self._timeout, _preload_content=False,
            ))  # fmt: skip
        except client.ApiException as err:
            if err.status != 404:  # already gone is what we wanted
                raise

    def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> bool:
        """Merge-patch an EdgeModel's status; whether it was written (False: it is gone).
        The answer, the whole EdgeModel, is not decoded: the caller knows what it wrote."""
        try:
            _drain(self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": dict(patch)},
                _content_type="application/merge-patch+json", _request_timeout=self._timeout,
                _preload_content=False,
            ))  # fmt: skip
        except client.ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def set_pod_condition(self, namespace: str, pod: str, condition: Mapping[str, Any]) -> None:
        """Set one condition of a pod's status (a readiness gate's); others stay."""
        try:
            _drain(self._core.patch_namespaced_pod_status(
                pod, namespace, {"status": {"conditions": [dict(condition)]}},
                _request_timeout=self._timeout, _preload_content=False,
            ))  # fmt: skip
        except client.ApiException as err:
            if err.status != 404:  # the pod went away meanwhile
                raise

    def model_workloads(self, namespace: str, model: str) -> list[dict[str, Any]]:
        """The model's Deployments and DaemonSets (each with its "kind"), read now."""
        found = []
        for kind, read in (("Deployment", self._apps.list_namespaced_deployment),
                           ("DaemonSet", self._apps.list_namespaced_daemon_set)):  # fmt: skip
            answer = read(namespace, label_selector=_model_selector(model),
                          _request_timeout=self._timeout, _preload_content=False)  # fmt: skip
            found += [{**item, "kind": kind} for item in _json(answer).get("items", [])]
        return found

    def model_pods(
        self, namespace: str, model: str, nodes: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """The model's pods, read now: all of them, or those on `nodes` (a read per node)."""
        fields = [None] if nodes is None else [f"spec.nodeName={n}" for n in sorted(nodes)]
        found = []
        for field in fields:  # None: no field selector
            answer = self._core.list_namespaced_pod(
                namespace, label_selector=_model_selector(model), field_selector=field,
                _request_timeout=self._timeout, _preload_content=False,
            )  # fmt: skip
            found += [{**item, "kind": "Pod"} for item in _json(answer).get("items", [])]
        return found

    def secret_value(self, namespace: str, name: str, key: str) -> bytes:
        """One key of a Secret; SecretUnavailable saying why when it cannot be read."""
        where = f"Secret {namespace}/{name}"
        try:
            secret = self._core.read_namespaced_secret(
                name, namespace, _request_timeout=self._timeout
            )
        except client.ApiException as err:
            if err.status == 404:
                raise SecretUnavailable(f"{where} does not exist") from err
            if err.status == 403:
                raise SecretUnavailable(
                    f"the operator may not read {where} (the chart grants it with "
                    "modelSigning.secretKeyRefs=true)"
                ) from err
            raise
        value = (secret.data or {}).get(key)
        if value is None:
            raise SecretUnavailable(f"{where} has no key {key!r}")
        return base64.b64decode(value)


def _model_selector(model: str) -> str:
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{MODEL_LABEL}={model}"


def _drain(response: Any) -> None:
    """Read an answer nobody needs and give its connection back: one returned with unread
    bytes would look dropped to the pool, which would open a new TLS connection instead."""
    try:
        response.data  # noqa: B018 (read, not decoded)
    finally:
        response.release_conn()


def _json(response: Any) -> dict[str, Any]:
    """The answer's object as plain JSON: the client's typed models cost more to build than
    the request took, and nothing here reads them."""
    try:
        found = json.loads(response.data)
    finally:
        response.release_conn()
    return found if isinstance(found, dict) else {}


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
