"""kopf handlers for EdgeModel: translate what kopf hands over, run the reconcile, publish
its status, Events and metrics.

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

from edgemodel_operator import wiring
from edgemodel_operator.api.names import (
    API_VERSION,
    GROUP,
    KIND,
    MANAGED,
    MODEL_LABEL,
    PLURAL,
    VERSION,
)
from edgemodel_operator.config import Config
from edgemodel_operator.handlers.settings import CompactDiffBase, apply_timeouts
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.plan import Pass
from edgemodel_operator.reconcile.status import status_patch
from edgemodel_operator.services.reconcile import reconcile

LOG = structlog.get_logger("edgemodel_operator")
ROLLBACKS = "edgemodel_rollbacks_total"
EVENTS = "edgemodel_events_total"
ERRORS = "edgemodel_reconcile_errors_total"
# Children of an EdgeModel, indexed by (namespace, model): kind, API group, version, plural.
CHILDREN = (
    ("Deployment", "apps", "v1", "deployments"),
    ("DaemonSet", "apps", "v1", "daemonsets"),
    ("Service", "", "v1", "services"),
    ("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
)


def _key(body: kopf.Body) -> tuple[str, str] | None:
    model = body.metadata.labels.get(MODEL_LABEL)
    return (str(body.metadata.namespace), model) if model else None


def nodes_index(body: kopf.Body, **_: Any) -> dict[None, dict[str, Any]]:
    return {None: dict(body)}


def children_index(kind: str) -> Any:
    def index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        key = _key(body)
        return {key: {**dict(body), "kind": kind}} if key else {}

    index.__name__ = f"{kind.lower()}s_index"
    return index


def pods_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    key = _key(body)
    return {key: {"metadata": dict(body.metadata), "spec": dict(body.spec),
                  "status": dict(body.status)}} if key else {}  # fmt: skip


def slices_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    key = _key(body)
    if key is None:
        return {}
    return {key: {"metadata": dict(body.metadata), "endpoints": body.get("endpoints") or []}}


def publish(body: kopf.Body, done: Pass, metrics: Any, recorder: Any = None) -> None:
    """The pass's Events (also logged) and metrics. With a recorder, an Event a pass from
    the same state already posted is not posted, logged or counted again."""
    meta = body.metadata
    log = LOG.bind(namespace=meta.namespace, name=meta.name, generation=meta.get("generation"))
    owner = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body.get("kind", KIND),
             "name": meta.name, "namespace": meta.namespace, "uid": meta.uid}  # fmt: skip
    fresh = []
    for event in done.events:
        if recorder is None:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        elif not _post(recorder, owner, str(meta.get("resourceVersion", "")), event, log):
            continue
        fresh.append(event.reason)
        log.info(event.message, reason=event.reason, type=event.type)
        metrics.count(EVENTS, "Events posted about EdgeModels, by type and reason.",
                      type=event.type, reason=event.reason)  # fmt: skip
    if done.action == "RollBack" and (recorder is None or "RolledBack" in fresh):
        metrics.count(ROLLBACKS, "Automatic rollbacks to the stable revision.",
                      namespace=meta.namespace, edgemodel=meta.name)  # fmt: skip


def _post(recorder: Any, owner: dict[str, Any], key: str, event: Any, log: Any) -> bool:
    try:
        return bool(recorder.post(owner, key, event.type, event.reason, event.message))
    except Exception as err:  # an Event lost is no reason to fail the pass; the log keeps it
        log.warning("Could not post the Event", reason=event.reason, error=str(err))
        return True


def _cause(err: Exception) -> str:
    """An API error's reason (Forbidden, Conflict, ...), else the error's type."""
    reason = getattr(err, "reason", None)
    return reason if isinstance(reason, str) and reason.isalpha() else type(err).__name__


def reconcile_edgemodel(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **indices: Any
) -> None:
    if body.metadata.deletion_timestamp:
        return  # the garbage collector removes the children; recreating them would fight it
    parts: wiring.Components = memo.components
    key = (str(body.metadata.namespace), str(body.metadata.name))
    observed = Observed(
        nodes=list(indices["nodes_index"].get(None, [])),
        children=[c for kind, *_ in CHILDREN if f"{kind.lower()}s_index" in indices
                  for c in indices[f"{kind.lower()}s_index"].get(key, [])],
        pods=list(indices["pods_index"].get(key, [])),
        endpoint_slices=list(indices["slices_index"].get(key, [])),
    )  # fmt: skip
    started = time.perf_counter()
    with parts.passes.hold(str(body.metadata.uid)):
        try:
            done = reconcile(dict(body), observed, parts.writer, parts.settings,
                             datetime.now(UTC), parts.images, parts.prober, parts.servers,
                             parts.recent)  # fmt: skip
        except Exception as err:
            parts.metrics.count(ERRORS, "Passes that failed, by cause: an API status such as "
                                "Forbidden, or the error's type.", reason=_cause(err))  # fmt: skip
            raise
        parts.metrics.observe_reconcile(time.perf_counter() - started)
        patch.status.update(status_patch(dict(body.status), done.status))
        publish(body, done, parts.metrics, parts.events)


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Attach every handler; the components are built at start-up and closed at exit."""

    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        memo.components = wiring.build(config)
        # Keep kopf's bookkeeping in edgeai.dev annotations: the status schema is ours alone.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = CompactDiffBase(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # our own Events say what happened
        settings.networking.error_backoffs = [1, 2, 5, 10, 30]
        apply_timeouts(settings, config.api)

    def cleanup(memo: kopf.Memo, **_: Any) -> None:
        memo.components.close()

    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    # A registry of our own starts empty: log in the way the kubernetes client does
    # (in-cluster service account, else KUBECONFIG).
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.index("", "v1", "nodes", registry=registry)(nodes_index)
    for kind, group, version, plural in CHILDREN:
        if kind == "NetworkPolicy" and not config.network_policy:
            continue  # not watched (nor permitted by the chart's RBAC) unless enabled
        kopf.index(group, version, plural, labels=MANAGED, registry=registry,
                   id=f"{kind.lower()}s_index")(children_index(kind))  # fmt: skip
    kopf.index("", "v1", "pods", labels=MANAGED, registry=registry)(pods_index)
    kopf.index("discovery.k8s.io", "v1", "endpointslices", labels=MANAGED,
               registry=registry, id="slices_index")(slices_index)  # fmt: skip
    resource = (GROUP, VERSION, PLURAL)
    labels = dict(config.selector) or None
    # A failed pass is retried at the resync period, not kopf's 60 s: passes are level-based
    # and cheap, and recovery (RBAC restored, API server back) should not wait a minute.
    retry = config.resync_seconds
    for decorate in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorate(*resource, labels=labels, registry=registry, backoff=retry)(reconcile_edgemodel)
    kopf.timer(
        *resource,
        interval=config.resync_seconds,
        initial_delay=config.resync_seconds,
        labels=labels,
        registry=registry,
        backoff=retry,
    )(reconcile_edgemodel)
