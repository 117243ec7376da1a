"""kopf handlers for EdgeModel: one worker (a kopf daemon) per EdgeModel runs its reconcile,
woken by what changes in the cluster and by a timer as a safety net.

Observation comes from kopf's watch-fed indices, so a reconcile makes no read requests.
The watch events of the model's pods, workloads, Services and EndpointSlices, of the
nodes it may run on, and of its own spec wake its worker (reconcile/wakeups.py says which
models a change concerns); a short pause gathers a burst of changes into one pass.

register() attaches the handlers to a registry once the configuration is known."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog

from edgemodel_operator import wiring
from edgemodel_operator.api.names import GROUP, MANAGED, PLURAL, VERSION
from edgemodel_operator.config import Config
from edgemodel_operator.handlers.wakeups import Wakeups
from edgemodel_operator.reconcile import wakeups as w
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.plan import Pass, accelerators_of
from edgemodel_operator.reconcile.status import status_patch
from edgemodel_operator.services.reconcile import reconcile

LOG = structlog.get_logger("edgemodel_operator")
ROLLBACKS = "edgemodel_rollbacks_total"
EVENTS = "edgemodel_events_total"
ERRORS = "edgemodel_reconcile_errors_total"
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # after a failed pass, then the resync
# Children of an EdgeModel, indexed by (namespace, model): kind, API group, version, plural.
CHILDREN = (
    ("Deployment", "apps", "v1", "deployments"),
    ("DaemonSet", "apps", "v1", "daemonsets"),
    ("Service", "", "v1", "services"),
    ("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
)


def _key(body: kopf.Body) -> w.Key | None:
    return w.owner_key(str(body.metadata.namespace), body.metadata.labels)


def _lean(body: kopf.Body) -> dict[str, Any]:
    """The object as the reconcile reads it, without managedFields (often half its size):
    the indices hold every node, pod and child in memory."""
    meta = {k: v for k, v in body.metadata.items() if k != "managedFields"}
    return {**dict(body), "metadata": meta}


def nodes_index(body: kopf.Body, **_: Any) -> dict[None, dict[str, Any]]:
    node = _lean(body)
    status = dict(node.get("status") or {})
    status.pop("images", None)  # a real node lists every image it holds
    return {None: {**node, "status": status}}


def children_index(kind: str) -> Any:
    def index(body: kopf.Body, **_: Any) -> dict[w.Key, dict[str, Any]]:
        key = _key(body)
        return {key: {**_lean(body), "kind": kind}} if key else {}

    index.__name__ = f"{kind.lower()}s_index"
    return index


def pods_index(body: kopf.Body, **_: Any) -> dict[w.Key, dict[str, Any]]:
    key = _key(body)
    return {key: _lean(body)} if key else {}


def slices_index(body: kopf.Body, **_: Any) -> dict[w.Key, dict[str, Any]]:
    key = _key(body)
    if key is None:
        return {}
    return {key: {"metadata": dict(body.metadata), "endpoints": body.get("endpoints") or []}}


def publish(body: kopf.Body, done: Pass, metrics: Any) -> None:
    """The pass's Events (also logged) and metrics."""
    meta = body.metadata
    log = LOG.bind(namespace=meta.namespace, name=meta.name, generation=meta.get("generation"))
    if done.action == "RollBack":
        metrics.count(ROLLBACKS, "Automatic rollbacks to the stable revision.",
                      namespace=meta.namespace, edgemodel=meta.name)  # fmt: skip
    for event in done.events:
        log.info(event.message, reason=event.reason, type=event.type)
        metrics.count(EVENTS, "Events posted about EdgeModels, by type and reason.",
                      type=event.type, reason=event.reason)  # fmt: skip
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def observe(key: w.Key, indices: Any) -> Observed:
    return Observed(
        nodes=list(indices["nodes_index"].get(None, [])),
        children=[c for kind, *_ in CHILDREN if f"{kind.lower()}s_index" in indices
                  for c in indices[f"{kind.lower()}s_index"].get(key, [])],
        pods=list(indices["pods_index"].get(key, [])),
        endpoint_slices=list(indices["slices_index"].get(key, [])),
    )  # fmt: skip


def reconcile_once(body: dict[str, Any], parts: wiring.Components, indices: Any) -> Pass:
    """One pass: plan, then apply and delete what it says."""
    meta = body["metadata"]
    started = time.perf_counter()
    observed = observe((meta["namespace"], meta["name"]), indices)
    done = reconcile(body, observed, parts.ports, parts.settings, datetime.now(UTC))
    parts.metrics.observe_reconcile(time.perf_counter() - started)
    parts.metrics.observe_status(body, done.status, observed.pods)
    return done


async def worker(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **indices: Any
) -> None:
    """The EdgeModel's reconciles, one at a time, for as long as it exists."""
    parts: wiring.Components = memo.components
    wakeups: Wakeups = memo.wakeups
    key = (str(body.metadata.namespace), str(body.metadata.name))
    wake = wakeups.join(key, accelerators_of(dict(body)))
    loop = asyncio.get_running_loop()
    failures, took = 0, 0.0
    # The object as our last status write left it, and the resourceVersion it replaced:
    # until the watch brings that write back, the live body is older than what we wrote.
    mine: tuple[str, dict[str, Any]] | None = None
    try:
        while not stopped:
            wake.clear()
            current = dict(body)
            if mine is not None and current["metadata"].get("resourceVersion") == mine[0]:
                current = {**current, "status": mine[1].get("status") or {}}
            if current["metadata"].get("deletionTimestamp"):
                return  # the garbage collector removes the children; recreating them would fight
            wakeups.update(key, accelerators_of(current))
            started = loop.time()
            try:
                done = await loop.run_in_executor(
                    memo.executor, reconcile_once, current, parts, indices
                )
                publish(body, done, parts.metrics)  # the Events go out before the status
                patch = status_patch(current.get("status") or {}, done.status)
                written = None
                if patch:
                    written = await loop.run_in_executor(
                        memo.executor, parts.writer.patch_status, *key, patch
                    )
                failures = 0
            except Exception as err:  # logged, counted and retried
                LOG.error("reconcile failed", namespace=key[0], name=key[1], error=str(err),
                          exc_info=err)  # fmt: skip
                parts.metrics.count(ERRORS, "Reconciles that failed (retried).")
                failures += 1
                await wakeups.wait(wake, stopped, RETRY_SECONDS[min(failures, 5) - 1])
                continue
            took = loop.time() - started
            if written is not None:
                mine = (str(current["metadata"].get("resourceVersion")), written)
            await wakeups.wait(wake, stopped, parts.config.resync_seconds)
            await asyncio.sleep(w.pause(parts.config.debounce_seconds, took))
    finally:
        wakeups.leave(key)
        parts.metrics.forget(*key)  # deleted (or the operator stops): its gauges go


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Attach every handler; the components are built at start-up and closed at exit."""

    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        memo.components = wiring.build(config)
        memo.wakeups = Wakeups(config.accelerators)
        memo.executor = settings.execution.executor
        # Keep kopf's bookkeeping in edgeai.dev annotations: the status schema is ours alone.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # our own Events say what happened
        settings.networking.error_backoffs = [1, 2, 5, 10, 30]

    def cleanup(memo: kopf.Memo, **_: Any) -> None:
        memo.components.close()

    def child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if (key := _key(body)) is not None:
            memo.wakeups.wake(key)

    def node_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
        memo.wakeups.node(str(body.metadata.name), None if type == "DELETED" else dict(body))

    def model_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        key = (str(body.metadata.namespace), str(body.metadata.name))
        memo.wakeups.model(key, w.model_essence(dict(body)))

    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    # A registry of our own starts empty: log in the way the kubernetes client does
    # (in-cluster service account, else KUBECONFIG).
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.index("", "v1", "nodes", registry=registry)(nodes_index)
    kopf.on.event("", "v1", "nodes", registry=registry)(node_changed)
    watched = [
        ("", "v1", "pods", "pods_index", pods_index),
        ("discovery.k8s.io", "v1", "endpointslices", "slices_index", slices_index),
    ]
    for kind, group, version, plural in CHILDREN:
        if kind == "NetworkPolicy" and not config.network_policy:
            continue  # not watched (nor permitted by the chart's RBAC) unless enabled
        watched.append((group, version, plural, f"{kind.lower()}s_index", children_index(kind)))
    for group, version, plural, index_id, index in watched:
        kopf.index(group, version, plural, labels=MANAGED, registry=registry,
                   id=index_id)(index)  # fmt: skip
        kopf.on.event(group, version, plural, labels=MANAGED, registry=registry,
                      id=f"wake_on_{plural}")(child_changed)  # fmt: skip
    resource = (GROUP, VERSION, PLURAL)
    labels = dict(config.selector) or None
    kopf.on.event(*resource, labels=labels, registry=registry)(model_changed)
    kopf.daemon(*resource, labels=labels, registry=registry, cancellation_timeout=5.0)(worker)
