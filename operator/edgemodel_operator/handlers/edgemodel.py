"""kopf handlers for EdgeModel: one worker (handlers/workers.py) per EdgeModel runs its
reconcile, woken by what changes in the cluster and by a timer as a safety net.

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
from collections.abc import Mapping
from typing import Any, cast

import kopf

from edgemodel_operator import wiring
from edgemodel_operator.api.names import GROUP, MANAGED, PLURAL, VERSION
from edgemodel_operator.config import Config
from edgemodel_operator.handlers.passes import CHILDREN, Passes
from edgemodel_operator.handlers.settings import CompactDiffBase, apply_timeouts
from edgemodel_operator.handlers.wakeups import Wakeups
from edgemodel_operator.handlers.workers import Run, Worker, Workers
from edgemodel_operator.reconcile import wakeups as w
from edgemodel_operator.reconcile.observed import Packed, lean, packed
from edgemodel_operator.reconcile.plan import accelerators_of

STOP_SECONDS = 5.0  # at exit, a worker's pass this long under way is cancelled
# kopf's worker for a watched object keeps the object's last event (the whole decoded
# object) until it has idled this long, and starts again at the next event; with kopf's
# 5 s, every object with an event in the last 5 s of a burst keeps one (estimated, not traced).
EVENT_WORKER_IDLE_SECONDS = 0.5


def _key(body: kopf.Body) -> w.Key | None:
    return w.owner_key(str(body.metadata.namespace), body.metadata.labels)


async def nodes_index(body: kopf.Body, **_: Any) -> dict[None, dict[str, Any]]:
    status = {k: v for k, v in (body.get("status") or {}).items() if k != "images"}
    return {None: lean({**body, "status": status})}  # a real node lists every image it holds


def children_index(kind: str) -> Any:
    async def index(body: kopf.Body, **_: Any) -> dict[w.Key, Packed]:
        key = _key(body)
        return {key: packed({**body, "kind": kind})} if key else {}

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


def passes_of(memo: kopf.Memo) -> Run:
    """What a model's worker runs: its passes, one at a time, until it is stopped."""
    components, wakeups = memo.components, memo.wakeups

    async def run(key: w.Key, worker: Worker, indices: Mapping[str, Any]) -> None:
        wake = wakeups.join(key, accelerators_of(worker.body.decoded()))
        passes = Passes(key, components, memo.executor, indices, wakeups.__len__)
        try:
            while not worker.stopped.is_set():
                wake.clear()
                body = worker.body.decoded()
                wakeups.update(key, accelerators_of(body))
                wait, pause = await passes.run(kopf.Body(cast(kopf.RawBody, body)))
                woken = await wakeups.wait(wake, worker.stopped, wait)
                await asyncio.sleep(passes.pause(pause, woken, wakeups.woken_by_failing_pod(key)))
        finally:  # deleted (the garbage collector removes its children), or the operator stops
            images = components.ports.images
            if worker.deleted and images is not None:
                images.stop(*key)  # its build stops: nothing is pushed for a deleted model
            wakeups.leave(key)
            components.metrics.forget(*key)

    return run


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Attach every handler; the components are built at start-up and closed at exit."""

    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        memo.components = wiring.build(config)
        memo.wakeups = Wakeups(config.accelerators)
        memo.workers = Workers(passes_of(memo))
        settings.execution.max_workers = wiring.PASS_THREADS
        memo.executor = settings.execution.executor
        # Keep kopf's bookkeeping in edgeai.dev annotations: the status schema is ours alone.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = CompactDiffBase(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # our own Events say what happened
        settings.networking.error_backoffs = [1, 2, 5, 10, 30]
        settings.queueing.idle_timeout = EVENT_WORKER_IDLE_SECONDS
        apply_timeouts(settings, config.api)

    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await memo.workers.stop_all(STOP_SECONDS)
        memo.components.close()

    async def child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if (key := _key(body)) is not None:
            memo.wakeups.wake(key)

    async def pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if (key := _key(body)) is not None:
            memo.wakeups.pod(key, body)

    async def node_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
        memo.wakeups.node(str(body.metadata.name), None if type == "DELETED" else dict(body))

    async def model_changed(
        body: kopf.Body, type: str | None, memo: kopf.Memo, **indices: Any
    ) -> None:
        key = (str(body.metadata.namespace), str(body.metadata.name))
        if type == "DELETED" or body.metadata.deletion_timestamp:
            memo.workers.gone(key, deleted=True)
        elif not w.selected(body.metadata.labels, config.selector):
            memo.workers.gone(key, deleted=False)  # relabelled out of this operator's shard
        else:
            memo.workers.seen(key, body, indices)
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
    # Every EdgeModel's events, not only the selected ones': a model relabelled out of the
    # selector must stop its worker.
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(model_changed)
