"""The desired child workload of one placed target: a Deployment (replicas) or a DaemonSet
(perNode), complete and deterministic, as a plain dict ready for server-side apply."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator.api.spec import EdgeModelSpec
from edgemodel_operator.reconcile.placement import Placement
from edgemodel_operator.reconcile.revision import digest

MANAGED_BY = "edgemodel-operator"
MODEL_LABEL = "edgeai.dev/edgemodel"
TARGET_LABEL = "edgeai.dev/target"
ACCELERATOR_LABEL = "edgeai.dev/accelerator"
SPEC_HASH = "edgeai.dev/spec-hash"
REVISION = "edgeai.dev/revision"
RUN_AS = 65532  # the model server images' non-root user
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class WorkloadSettings:
    default_image: str  # "{accelerator}" is filled in
    image_pull_policy: str = "IfNotPresent"
    # Images built for this model, by "accelerator/precision", pinned by digest.
    pinned: Mapping[str, str] = field(default_factory=dict)


def variant_key(accelerator: str, precision: str) -> str:
    return f"{accelerator}/{precision}"


def workload_name(model: str, target: str) -> str:
    return f"{model}-{target}"


def label_value(text: str) -> str:
    return _LABEL_UNSAFE.sub("-", text)[:63].strip("-._")


def image_for(placement: Placement, settings: WorkloadSettings) -> str:
    """The target's own image, else the one built for its variant, else the default."""
    built = settings.pinned.get(variant_key(placement.accelerator, placement.precision))
    return (
        placement.target.image
        or built
        or settings.default_image.format(accelerator=placement.accelerator)
    )


def _percent_of(value: int | str, total: int) -> int:
    if isinstance(value, int):
        return value
    return math.floor(total * int(value.rstrip("%")) / 100) if value.endswith("%") else int(value)


def _container(spec: EdgeModelSpec, placement: Placement, image: str, model: str) -> dict[str, Any]:
    probe = spec.serving.probe
    port = spec.serving.port

    def http(path: str, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": probe.period_seconds,
            "timeoutSeconds": probe.timeout_seconds,
            "failureThreshold": failures,
        }

    resources = {k: dict(v) for k, v in placement.target.resources.items() if v}
    if placement.resource:
        resources["limits"] = {**resources.get("limits", {}), placement.resource: "1"}
    env = {
        "EDGEMODEL_MODEL_NAME": model,
        "EDGEMODEL_MODEL_URI": spec.model.uri,
        "EDGEMODEL_MODEL_SHA256": spec.model.sha256,
        "EDGEMODEL_MODEL_VERSION": spec.model.version,
        "EDGEMODEL_ACCELERATOR": placement.accelerator,
        "EDGEMODEL_PRECISION": placement.precision,
        "EDGEMODEL_PORT": str(port),
    }
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "startupProbe": http(
            "/v2/health/ready",
            max(1, math.ceil(probe.startup_timeout_seconds / probe.period_seconds)),
        ),
        "readinessProbe": http("/v2/health/ready", probe.failure_threshold),
        "livenessProbe": http("/v2/health/live", probe.failure_threshold),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if resources:
        container["resources"] = resources
    return container


def build_workload(
    owner: Owner,
    spec: EdgeModelSpec,
    placement: Placement,
    settings: WorkloadSettings,
    revision: str,
) -> dict[str, Any]:
    target = placement.target
    name = workload_name(owner.name, target.name)
    selector = {MODEL_LABEL: owner.name, TARGET_LABEL: target.name}
    labels = {
        "app.kubernetes.io/name": "edgemodel-server",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/version": label_value(spec.model.version) or "unknown",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": owner.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector,
        ACCELERATOR_LABEL: placement.accelerator,
    }
    image = image_for(placement, settings)
    container = _container(spec, placement, image, owner.name)
    container["imagePullPolicy"] = settings.image_pull_policy
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in placement.tolerations]
    template = {
        "metadata": {"labels": dict(labels), "annotations": {REVISION: revision}},
        "spec": pod_spec,
    }
    max_unavailable = spec.rollout.max_unavailable
    workload_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "template": template,
        "revisionHistoryLimit": 5,
    }
    if target.placement == "perNode":
        kind = "DaemonSet"
        workload_spec["updateStrategy"] = (
            {"type": "OnDelete"}  # the operator moves nodes wave by wave (reconcile/waves.py)
            if spec.rollout.waves
            else {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}}
        )
    else:
        kind = "Deployment"
        # An accelerator-bound pod cannot surge onto a node whose device is taken.
        surge = 0 if placement.resource else 1
        if surge == 0 and _percent_of(max_unavailable, target.replicas) == 0:
            max_unavailable = 1
        workload_spec["replicas"] = target.replicas
        workload_spec["progressDeadlineSeconds"] = spec.rollout.progress_deadline_seconds
        workload_spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": surge},
        }
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {REVISION: revision},
            "ownerReferences": [
                {
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": workload_spec,
    }
    body["metadata"]["annotations"][SPEC_HASH] = digest(body, length=16)
    return body


def running_image(workload: Mapping[str, Any] | None) -> str | None:
    containers = (((workload or {}).get("spec") or {}).get("template") or {}).get("spec", {})
    found = (containers or {}).get("containers") or []
    return str(found[0].get("image")) if found else None
