"""The desired child workload of one placed target: a Deployment (replicas) or a DaemonSet
(perNode), complete and deterministic, as a plain dict ready for server-side apply.

A pod runs an image that carries its model (built by the operator, or the target's own),
or the accelerator's model server image, which carries none: then an init container
fetches spec.model.uri into an emptyDir and verifies its sha256 before the server starts."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator.api.names import (
    ACCELERATOR_LABEL,
    COMPONENT_LABEL,
    HELD_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_LABEL,
    NAME_LABEL,
    PART_OF_LABEL,
    PROBE_CONDITION,
    REVISION_ANNOTATION,
    SPEC_HASH_ANNOTATION,
    TARGET_LABEL,
    VERSION_LABEL,
)
from edgemodel_operator.api.spec import EdgeModelSpec
from edgemodel_operator.reconcile.placement import Placement, variant_key
from edgemodel_operator.reconcile.revision import digest

RUN_AS = 65532  # the model server images' non-root user
ORIGINAL = "original"  # the precision of a model served as published (fetched, not optimized)
MODELS_DIR = "/models"  # where the server image looks for /models/model.onnx
MODELS_SIZE_LIMIT = "4Gi"  # the emptyDir a fetched model lives in
PRE_STOP_SECONDS = 3
SERVER_PYTHON = "/opt/venv/bin/python"  # the server image's interpreter (images/Dockerfile)
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class WorkloadSettings:
    default_image: str  # the model server without a model; "{accelerator}" is filled in
    image_pull_policy: str = "IfNotPresent"
    # Images built for this model, by "accelerator/precision", pinned by digest.
    pinned: Mapping[str, str] = field(default_factory=dict)
    # Pods wait for the operator's active probe (a readiness gate) before taking traffic.
    probe_gate: bool = False
    # The server image of each accelerator by digest, where it was resolved.
    servers: Mapping[str, str] = field(default_factory=dict)


def workload_name(model: str, target: str) -> str:
    return f"{model}-{target}"


def label_value(text: str) -> str:
    return _LABEL_UNSAFE.sub("-", text)[:63].strip("-._")


def image_for(placement: Placement, settings: WorkloadSettings) -> tuple[str, bool]:
    """The image to run and whether it carries the model: the target's own image, else the
    one built for its variant, else the accelerator's server image (without a model)."""
    own = placement.target.image
    built = settings.pinned.get(variant_key(placement.accelerator, placement.precision))
    if own or built:
        return str(own or built), True
    pinned = settings.servers.get(placement.accelerator)
    return pinned or settings.default_image.format(accelerator=placement.accelerator), False


def _percent_of(value: int | str, total: int) -> int:
    if isinstance(value, int):
        return value
    return math.floor(total * int(value.rstrip("%")) / 100) if value.endswith("%") else int(value)


def _container(
    spec: EdgeModelSpec, placement: Placement, image: str, model: str, precision: str,
    revision: str,
) -> dict[str, Any]:  # fmt: skip
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
        "EDGEMODEL_MODEL_VERSION": spec.model.version,
        "EDGEMODEL_ACCELERATOR": placement.accelerator,
        "EDGEMODEL_PRECISION": precision,
        "EDGEMODEL_PORT": str(port),
        # Labels of the server's metrics: which target and revision the figures belong to.
        "EDGEMODEL_TARGET": placement.target.name,
        "EDGEMODEL_REVISION": revision,
    }
    if placement.target.fallback == "cpu" and placement.accelerator != "cpu":
        # The target accepts CPUs: its server may answer on CPU when its provider is missing.
        env["EDGEMODEL_CPU_FALLBACK"] = "true"
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
        "securityContext": copy.deepcopy(RESTRICTED),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        # A pod being replaced keeps answering until its endpoint has left every node's
        # Service rules (kube-proxy syncs within about a second); then SIGTERM drains it.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }
    if resources:
        container["resources"] = resources
    return container


def _fetcher(spec: EdgeModelSpec, image: str) -> dict[str, Any]:
    """The init container that puts the model in place (edgemodel_server.fetch)."""
    return {
        "name": "fetch-model",
        "image": image,
        "command": [SERVER_PYTHON, "-m", "edgemodel_server.fetch"],
        "env": [
            {"name": "EDGEMODEL_MODEL_URI", "value": spec.model.uri},
            {"name": "EDGEMODEL_MODEL_SHA256", "value": spec.model.sha256},
            {"name": "EDGEMODEL_MODEL_PATH", "value": f"{MODELS_DIR}/model.onnx"},
        ],
        "securityContext": copy.deepcopy(RESTRICTED),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}],
    }


def target_labels(owner: Owner, spec: EdgeModelSpec, placement: Placement) -> dict[str, str]:
    """Labels of every child of a target, its pods included."""
    name = workload_name(owner.name, placement.target.name)
    return {
        NAME_LABEL: "edgemodel-server",
        INSTANCE_LABEL: name,
        VERSION_LABEL: label_value(spec.model.version) or "unknown",
        COMPONENT_LABEL: "model-server",
        PART_OF_LABEL: owner.name,
        MANAGED_BY_LABEL: MANAGED_BY,
        MODEL_LABEL: owner.name,
        TARGET_LABEL: placement.target.name,
        ACCELERATOR_LABEL: placement.accelerator,
    }


def pod_selector(owner: Owner, placement: Placement) -> dict[str, str]:
    return {MODEL_LABEL: owner.name, TARGET_LABEL: placement.target.name}


def child(
    owner: Owner, api_version: str, kind: str, name: str, labels: Mapping[str, str],
    spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """An object the EdgeModel owns (the garbage collector deletes it with the model),
    stamped with the hash of its whole desired form for drift detection."""
    body: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": dict(labels),
            "annotations": dict(annotations or {}),
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
        "spec": dict(spec),
    }
    body["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = digest(body, length=16)
    return body


@dataclass(frozen=True)
class Nodes:
    """Which of its placement's nodes a DaemonSet covers: all but `skip` (the nodes held
    back on the stable revision), or `only` those (the DaemonSet holding them back)."""

    skip: tuple[str, ...] = ()
    only: tuple[str, ...] = ()


HELD_SUFFIX = "-held"  # the DaemonSet that keeps held-back nodes on the stable revision


def _node_affinity(placement: Placement, nodes: Nodes) -> dict[str, Any] | None:
    """The node affinity of a placement's pods. The API server takes a single node name per
    matchFields requirement: nodes skipped are one NotIn each (a term's requirements all
    apply), nodes kept to are one term each (any term may match)."""
    term: dict[str, Any] = {}
    if placement.archs is not None:  # only the architectures its image serves
        term["matchExpressions"] = [
            {"key": "kubernetes.io/arch", "operator": "In", "values": list(placement.archs)}
        ]
    terms = [term]
    if nodes.only:
        terms = [{**term, "matchFields": [_name("In", name)]} for name in sorted(nodes.only)]
    elif nodes.skip:
        term["matchFields"] = [_name("NotIn", name) for name in sorted(nodes.skip)]
    if not terms[0]:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": terms}}}  # fmt: skip


def _name(operator: str, name: str) -> dict[str, Any]:
    return {"key": "metadata.name", "operator": operator, "values": [name]}


def _pod_spec(
    spec: EdgeModelSpec, placement: Placement, settings: WorkloadSettings, model: str,
    revision: str, nodes: Nodes,
) -> dict[str, Any]:  # fmt: skip
    image, carries_model = image_for(placement, settings)
    # A fetched model is served as published: the requested precision needs an image build.
    precision = placement.precision if carries_model else ORIGINAL
    container = _container(spec, placement, image, model, precision, revision)
    container["imagePullPolicy"] = settings.image_pull_policy
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
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
        "volumes": volumes,
    }
    if not carries_model:
        fetcher = _fetcher(spec, image)
        fetcher["imagePullPolicy"] = settings.image_pull_policy
        pod_spec["initContainers"] = [fetcher]
        container["volumeMounts"].append(
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True}
        )
        volumes.append({"name": "models", "emptyDir": {"sizeLimit": MODELS_SIZE_LIMIT}})
    if settings.probe_gate:
        pod_spec["readinessGates"] = [{"conditionType": PROBE_CONDITION}]
    if placement.runtime_class:
        pod_spec["runtimeClassName"] = placement.runtime_class
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if (affinity := _node_affinity(placement, nodes)) is not None:
        pod_spec["affinity"] = affinity
    if placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in placement.tolerations]
    return pod_spec


def _update_strategy(spec: EdgeModelSpec, placement: Placement) -> dict[str, Any]:
    """How a DaemonSet moves its nodes to a new revision."""
    max_unavailable = spec.rollout.max_unavailable
    if spec.rollout.paced:  # the operator moves nodes itself (reconcile/waves.py)
        return {"type": "OnDelete"}
    if placement.resource:  # the device is taken: the pod is replaced in place
        # Without a surge, none unavailable would mean no progress (the API refuses it).
        in_place = 1 if max_unavailable in (0, "0", "0%") else max_unavailable
        return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": in_place}}
    # The new pod starts beside the old one, so apps on the node never lose their server.
    surge = max_unavailable if max_unavailable not in (0, "0", "0%") else 1
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 0}}


def build_workload(
    owner: Owner,
    spec: EdgeModelSpec,
    placement: Placement,
    settings: WorkloadSettings,
    revision: str,
    nodes: Nodes = Nodes(),
) -> dict[str, Any]:
    target = placement.target
    labels = target_labels(owner, spec, placement)
    selector = pod_selector(owner, placement)
    if nodes.only:  # its pods stand apart from the main DaemonSet's
        labels[HELD_LABEL] = selector[HELD_LABEL] = "true"
    template = {
        "metadata": {"labels": dict(labels), "annotations": {REVISION_ANNOTATION: revision}},
        "spec": _pod_spec(spec, placement, settings, owner.name, revision, nodes),
    }
    workload_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "template": template,
        "revisionHistoryLimit": 5,
    }
    if target.placement == "perNode":
        kind = "DaemonSet"
        workload_spec["updateStrategy"] = _update_strategy(spec, placement)
    else:
        kind = "Deployment"
        # An accelerator-bound pod cannot surge onto a node whose device is taken.
        max_unavailable = spec.rollout.max_unavailable
        surge = 0 if placement.resource else 1
        if surge == 0 and _percent_of(max_unavailable, target.replicas) == 0:
            max_unavailable = 1
        workload_spec["replicas"] = target.replicas
        workload_spec["progressDeadlineSeconds"] = spec.rollout.progress_deadline_seconds
        workload_spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": surge},
        }
    name = workload_name(owner.name, target.name) + (HELD_SUFFIX if nodes.only else "")
    return child(owner, "apps/v1", kind, name, labels, workload_spec,
                 {REVISION_ANNOTATION: revision})  # fmt: skip


def running_image(workload: Mapping[str, Any] | None) -> str | None:
    containers = (((workload or {}).get("spec") or {}).get("template") or {}).get("spec", {})
    found = (containers or {}).get("containers") or []
    return str(found[0].get("image")) if found else None
