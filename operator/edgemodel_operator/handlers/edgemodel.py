"""kopf handlers for EdgeModel: one worker (a kopf daemon) per EdgeModel runs its reconcile,
woken by what changes in the cluster and by a timer as a safety net.

Observation comes from kopf's watch-fed indices, so a reconcile makes no read requests.
The watch events of the model's pods, workloads and Services, of the nodes it may run on,
and of its own spec wake its worker (reconcile/wakeups.py says which models a change
concerns); a short pause gathers a burst of changes into one pass.

The index and wake-up handlers are coroutines, though they never wait: kopf runs a plain
function in its thread pool, which the passes share, so during a burst every watch event
would wait for a pass thread while kopf queues the next ones (whole decoded objects), and
the wake-ups' asyncio.Events would be set from outside the event loop.

register() attaches the handlers to a registry once the configuration is known."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from edgemodel_operator import wiring
from edgemodel_operator.api.names import GROUP, MANAGED, PLURAL, VERSION
from edgemodel_operator.config import Config
from edgemodel_operator.handlers.passes import CHILDREN, Passes
from edgemodel_operator.handlers.settings import CompactDiffBase, apply_timeouts
from edgemodel_operator.handlers.wakeups import Wakeups
from edgemodel_operator.reconcile import wakeups as w
from edgemodel_operator.reconcile.observed import lean
from edgemodel_operator.reconcile.plan import accelerators_of


def _key(body: kopf.Body) -> w.Key | None:
    return w.owner_key(str(body.metadata.namespace), body.metadata.labels)


async def nodes_index(body: kopf.Body, **_: Any) -> dict[None, dict[str, Any]]:
    status = {k: v for k, v in (body.get("status") or {}).items() if k != "images"}
    return {None: lean({**body, "status": status})}  # a real node lists every image it holds


def children_index(kind: str) -> Any:
    async def index(body: kopf.Body, **_: Any) -> dict[w.Key, dict[str, Any]]:
        key = _key(body)
        return {key: {**lean(body), "kind": kind}} if key else {}

    index.__name__ = f"{kind.lower()}s_index"
    return index


# What the reconcile reads of a pod: the node, the readiness gates and the containers'
# ports of its spec; its conditions, address and containers' states of its status.
POD_SPEC = ("nodeName", "readinessGates")
POD_STATUS = ("phase", "reason", "message", "conditions", "podIP")
CONTAINER_STATUS = ("name", "ready", "started", "restartCount", "state", "lastState")


async def pods_index(body: kopf.Body, **_: Any) -> dict[w.Key, dict[str, Any]]:
    """A pod cut to what the reconcile reads (a thousand models' pods are most of what the
    indices hold; a kubelet also reports each container's image, IDs, mounts and resources)."""
    key = _key(body)
    if key is None:
        return {}
    spec = {k: v for k, v in body.spec.items() if k in POD_SPEC}
    spec["containers"] = [{"name": c.get("name"), "ports": c.get("ports") or []}
                          for c in body.spec.get("containers") or []]  # fmt: skip
    status = {k: v for k, v in body.status.items() if k in POD_STATUS}
    for states in ("initContainerStatuses", "containerStatuses"):
        if states in body.status:
            status[states] = [{k: v for k, v in cs.items() if k in CONTAINER_STATUS}
                              for cs in body.status.get(states) or []]  # fmt: skip
    return {key: lean({**body, "spec": spec, "status": status})}


async def worker(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **indices: Any
) -> None:
    """The EdgeModel's passes, one at a time, for as long as it exists."""
    key = (str(body.metadata.namespace), str(body.metadata.name))
    wake = memo.wakeups.join(key, accelerators_of(dict(body)))
    passes = Passes(key, memo.components, memo.executor, indices, memo.wakeups.__len__)
    try:
        while not stopped and not body.metadata.deletion_timestamp:
            wake.clear()
            memo.wakeups.update(key, accelerators_of(dict(body)))
            wait, pause = await passes.run(body)
            woken = await memo.wakeups.wait(wake, stopped, wait)
            await asyncio.sleep(passes.pause(pause, woken, memo.wakeups.woken_by_failing_pod(key)))
    finally:  # deleted (the garbage collector removes its children), or the operator stops
        images = memo.components.ports.images
        if body.metadata.deletion_timestamp and images is not None:
            images.stop(*key)  # its build stops: nothing is pushed for a deleted model
        memo.wakeups.leave(key)
        memo.components.metrics.forget(*key)


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Attach every handler; the components are built at start-up and closed at exit."""

    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        memo.components = wiring.build(config)
        memo.wakeups = Wakeups(config.accelerators)
        settings.execution.max_workers = wiring.PASS_THREADS
        memo.executor = settings.execution.executor
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

    async def child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if (key := _key(body)) is not None:
            memo.wakeups.wake(key)

    async def pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if (key := _key(body)) is not None:
            memo.wakeups.pod(key, body)

    async def node_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
        memo.wakeups.node(str(body.metadata.name), None if type == "DELETED" else dict(body))

    async def model_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        key = (str(body.metadata.namespace), str(body.metadata.name))
        memo.wakeups.model(key, w.model_essence(dict(body)))

    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    # A registry of our own starts empty: log in the way the kubernetes client does
    # (in-cluster service account, else KUBECONFIG).
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.index("", "v1", "nodes", registry=registry)(nodes_index)
    kopf.on.event("", "v1", "nodes", registry=registry)(node_changed)
    watched = [("", "v1", "pods", "pods_index", pods_index)]
    for kind, group, version, plural in CHILDREN:
        if kind == "NetworkPolicy" and not config.network_policy:
            continue  # not watched (nor permitted by the chart's RBAC) unless enabled
        watched.append((group, version, plural, f"{kind.lower()}s_index", children_index(kind)))
    for group, version, plural, index_id, index in watched:
        kopf.index(group, version, plural, labels=MANAGED, registry=registry,
                   id=index_id)(index)  # fmt: skip
        wake = pod_changed if plural == "pods" else child_changed
        kopf.on.event(group, version, plural, labels=MANAGED, registry=registry,
                      id=f"wake_on_{plural}")(wake)  # fmt: skip
    resource = (GROUP, VERSION, PLURAL)
    labels = dict(config.selector) or None
    kopf.on.event(*resource, labels=labels, registry=registry)(model_changed)
    kopf.daemon(*resource, labels=labels, registry=registry, cancellation_timeout=5.0)(worker)
