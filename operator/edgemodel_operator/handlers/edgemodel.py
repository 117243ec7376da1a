"""kopf handlers for EdgeModel: parse what kopf hands over, call the service, write status.

Observation comes from kopf's watch-fed indices, so a reconcile makes no read requests;
the same reconcile runs on create, update, resume and on a timer (level-based: pods
becoming Ready and hand edits of children are picked up by the next tick).

register() attaches the handlers to a registry once the configuration is known."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog

from edgemodel_operator.adapters import kube, metrics_http, prober
from edgemodel_operator.config import Config
from edgemodel_operator.metrics import Metrics
from edgemodel_operator.reconcile.status import status_patch
from edgemodel_operator.services.images import DockerBuilder, ImagePipeline
from edgemodel_operator.services.reconcile import Observed, reconcile

GROUP, VERSION, PLURAL = "edgeai.dev", "v1alpha1", "edgemodels"
MANAGED = {"app.kubernetes.io/managed-by": "edgemodel-operator"}
MODEL_LABEL = "edgeai.dev/edgemodel"
LOG = structlog.get_logger("edgemodel_operator")
ROLLBACKS = "edgemodel_rollbacks_total"
EVENTS = "edgemodel_events_total"


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.writer = kube.connect()
    memo.metrics = Metrics()
    builds = memo.config.builds
    memo.images = ImagePipeline(builds, DockerBuilder(builds)) if builds else None
    memo.prober = prober.probe if memo.config.active_probe else None
    if memo.config.metrics_address:
        metrics_http.serve(memo.config.metrics_address, memo.metrics.render)
    # Keep kopf's bookkeeping in edgeai.dev annotations: the status schema is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="edgeai.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="edgeai.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what happened
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]


def _children_key(body: kopf.Body) -> tuple[str, str] | None:
    model = body.metadata.labels.get(MODEL_LABEL)
    return (str(body.metadata.namespace), model) if model else None


def nodes_index(body: kopf.Body, **_: Any) -> dict[None, dict[str, Any]]:
    return {None: dict(body)}


def deployments_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    key = _children_key(body)
    return {key: {**dict(body), "kind": "Deployment"}} if key else {}


def daemonsets_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    key = _children_key(body)
    return {key: {**dict(body), "kind": "DaemonSet"}} if key else {}


def pods_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    key = _children_key(body)
    return {key: {"metadata": dict(body.metadata), "spec": dict(body.spec),
                  "status": dict(body.status)}} if key else {}  # fmt: skip


def reconcile_edgemodel(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **indices: Any
) -> None:
    if body.metadata.deletion_timestamp:
        return  # the garbage collector removes the children; recreating them would fight it
    key = (str(body.metadata.namespace), str(body.metadata.name))
    observed = Observed(
        nodes=list(indices["nodes_index"].get(None, [])),
        workloads=[
            *indices["deployments_index"].get(key, []),
            *indices["daemonsets_index"].get(key, []),
        ],
        pods=list(indices["pods_index"].get(key, [])),
    )
    started = time.perf_counter()
    outcome = reconcile(
        dict(body),
        observed,
        memo.writer,
        memo.config,
        datetime.now(UTC),
        memo.images,
        memo.prober,
    )
    memo.metrics.observe_reconcile(time.perf_counter() - started)
    changes = status_patch(dict(body.status), outcome.status)
    if changes:
        patch.status.update(changes)
    log = LOG.bind(namespace=key[0], name=key[1], generation=body.metadata.get("generation"))
    if outcome.action == "RollBack":
        memo.metrics.count(ROLLBACKS, "Automatic rollbacks to the stable revision.",
                           namespace=key[0], edgemodel=key[1])  # fmt: skip
    for event in outcome.events:
        log.info(event.message, reason=event.reason, type=event.type)
        memo.metrics.count(EVENTS, "Events posted about EdgeModels, by type and reason.",
                           type=event.type, reason=event.reason)  # fmt: skip
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Attach every handler; config is stored in memo for them and sets the timer."""

    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        memo.config = config
        configure(settings, memo, **kwargs)

    kopf.on.startup(registry=registry)(startup)
    # A registry of our own starts empty: log in the way the kubernetes client does
    # (in-cluster service account, else KUBECONFIG).
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.index("", "v1", "nodes", registry=registry)(nodes_index)
    kopf.index("apps", "v1", "deployments", labels=MANAGED, registry=registry)(deployments_index)
    kopf.index("apps", "v1", "daemonsets", labels=MANAGED, registry=registry)(daemonsets_index)
    kopf.index("", "v1", "pods", labels=MANAGED, registry=registry)(pods_index)
    resource = (GROUP, VERSION, PLURAL)
    for decorate in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorate(*resource, registry=registry)(reconcile_edgemodel)
    kopf.timer(
        *resource,
        interval=config.resync_seconds,
        initial_delay=config.resync_seconds,
        registry=registry,
    )(reconcile_edgemodel)
