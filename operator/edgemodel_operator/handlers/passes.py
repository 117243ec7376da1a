"""One EdgeModel's passes: observe it from kopf's indices, reconcile in a worker thread,
publish the Events and metrics, write the status; and what a failing pass waits before the
next try. A pass makes no read requests: everything it reads is in the indices."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog

from edgemodel_operator import wiring
from edgemodel_operator.api.names import API_VERSION, KIND
from edgemodel_operator.reconcile import wakeups as w
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.plan import Pass
from edgemodel_operator.reconcile.status import status_patch
from edgemodel_operator.services.reconcile import reconcile

LOG = structlog.get_logger("edgemodel_operator")
ROLLBACKS = "edgemodel_rollbacks_total"
EVENTS = "edgemodel_events_total"
ERRORS = "edgemodel_reconcile_errors_total"
ERRORS_HELP = "Passes that failed, by cause: an API status such as Forbidden, or the error's type."
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # after a failed pass, then the resync
# Children of an EdgeModel, indexed by (namespace, model): kind, API group, version, plural.
CHILDREN = (
    ("Deployment", "apps", "v1", "deployments"),
    ("DaemonSet", "apps", "v1", "daemonsets"),
    ("Service", "", "v1", "services"),
    ("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
)


def decided_from(current: dict[str, Any]) -> str:
    """What names a pass's Events: the status it decided from. A pass repeated on the same
    status (its status write lost to a crash or an outage, even if the spec changed since)
    names the same Events, which the API server then refuses to post twice."""
    status = json.dumps(current.get("status") or {}, sort_keys=True, default=str)
    return hashlib.sha256(status.encode()).hexdigest()[:16]


def publish(body: kopf.Body, done: Pass, metrics: Any, recorder: Any = None,
            state: str = "") -> None:  # fmt: skip
    """The pass's Events (also logged) and metrics. With a recorder, an Event a pass from
    the same `state` (decided_from) already posted is not posted, logged or counted again."""
    meta = body.metadata
    log = LOG.bind(namespace=meta.namespace, name=meta.name, generation=meta.get("generation"))
    owner = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body.get("kind", KIND),
             "name": meta.name, "namespace": meta.namespace, "uid": meta.uid}  # fmt: skip
    fresh = []
    for event in done.events:
        if recorder is None:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        elif not _post(recorder, owner, state, event, log):
            continue
        fresh.append(event.reason)
        log.info(event.message, reason=event.reason, type=event.type)
        metrics.count(EVENTS, "Events posted about EdgeModels, by type and reason.",
                      type=event.type, reason=event.reason)  # fmt: skip
    if done.action == "RollBack" and (recorder is None or "RolledBack" in fresh):
        metrics.count(ROLLBACKS, "Automatic rollbacks to the stable revision.",
                      namespace=meta.namespace, edgemodel=meta.name)  # fmt: skip


# Answers that will not change on a retry: the Event is given up (the log keeps it).
REFUSED = frozenset({400, 403, 404, 422})


def _post(recorder: Any, owner: dict[str, Any], key: str, event: Any, log: Any) -> bool:
    """Post one Event. An API server that refuses it for good (forbidden, invalid) costs
    the Event, not the pass; one that cannot be reached or fails for now fails the pass
    before its status write, so the retry decides from the same status and posts the
    Events still missing under the same names (an API server restart lost a NotReady)."""
    try:
        return bool(recorder.post(owner, key, event.type, event.reason, event.message))
    except Exception as err:
        if getattr(err, "status", None) not in REFUSED:
            raise
        log.warning("Could not post the Event", reason=event.reason, error=str(err))
        return True


def _cause(err: Exception) -> str:
    """An API error's reason (Forbidden, Conflict, ...), else the error's type."""
    reason = getattr(err, "reason", None)
    return reason if isinstance(reason, str) and reason.isalpha() else type(err).__name__


def observe(key: w.Key, indices: Any) -> Observed:
    return Observed(
        nodes=list(indices["nodes_index"].get(None, [])),
        children=[c.decoded() for kind, *_ in CHILDREN if f"{kind.lower()}s_index" in indices
                  for c in indices[f"{kind.lower()}s_index"].get(key, [])],  # kept packed
        pods=list(indices["pods_index"].get(key, [])),
    )  # fmt: skip


def reconcile_once(
    body: dict[str, Any], parts: wiring.Components, indices: Any
) -> tuple[Pass, float]:
    """One pass: plan, then apply and delete what it says. Returns the pass and the CPU
    seconds it used (its waits on the API server not counted)."""
    meta = body["metadata"]
    started, cpu = time.perf_counter(), time.thread_time()
    observed = observe((meta["namespace"], meta["name"]), indices)
    done = reconcile(body, observed, parts.ports, parts.settings, datetime.now(UTC))
    parts.metrics.observe_reconcile(time.perf_counter() - started)
    parts.metrics.observe_status(body, done.status, observed.pods)
    return done, time.thread_time() - cpu


class Passes:
    """The passes of one EdgeModel, run one at a time by its worker."""

    def __init__(self, key: w.Key, parts: wiring.Components,
                 executor: concurrent.futures.Executor, indices: Any,
                 models: Callable[[], int]) -> None:  # fmt: skip
        self.key, self.parts, self.executor, self.indices = key, parts, executor, indices
        self.models = models  # how many models this operator runs now
        self.failures = 0
        # The status our last write left, and the resourceVersion it replaced: until the
        # watch brings that write back, the live body is older than what we wrote.
        self.mine: tuple[str, dict[str, Any]] | None = None
        self.rolling = False  # the last pass rolled a new revision forward
        self.eager = False  # the last pass skipped its pause for a failing pod

    def pause(self, pause: float, woken: bool, failing_pod: bool) -> float:
        """How long to wait before the next pass, now that the wait for a wake-up ended."""
        took = w.pause_before_pass(pause, woken, failing_pod, self.rolling, self.eager)
        self.eager = woken and failing_pod and took == 0.0
        return took

    def _current(self, body: kopf.Body) -> dict[str, Any]:
        current = dict(body)
        if self.mine is not None and current["metadata"].get("resourceVersion") == self.mine[0]:
            current = {**current, "status": self.mine[1]}
        else:
            self.mine = None  # the watch has brought a later version: no need to keep it
        return current

    async def run(self, body: kopf.Body) -> tuple[float, float]:
        """One pass; returns how long to wait for a wake-up before the next (the resync, or
        a backoff after a failure) and the pause that gathers a burst of wake-ups."""
        loop = asyncio.get_running_loop()
        current = self._current(body)
        try:
            done, cpu = await loop.run_in_executor(self.executor, reconcile_once, current,
                                                   self.parts, self.indices)  # fmt: skip
            # The Events go out before the status.
            await loop.run_in_executor(self.executor, publish, body, done, self.parts.metrics,
                                       self.parts.events, decided_from(current))  # fmt: skip
            patch = status_patch(current.get("status") or {}, done.status)
            if patch:
                written = await loop.run_in_executor(self.executor,
                                                     self.parts.writer.patch_status,
                                                     *self.key, patch)  # fmt: skip
                if written:  # the stored status is now what the pass decided
                    self.mine = (str(current["metadata"].get("resourceVersion")), done.status)
        except Exception as err:  # logged, counted and retried
            self.failures += 1
            # Passes are level-based: recovery (RBAC restored, the API server back) waits at
            # most a resync.
            backoff = RETRY_SECONDS[min(self.failures, len(RETRY_SECONDS)) - 1]
            backoff = min(backoff, self.parts.config.resync_seconds)
            cause = _cause(err)
            LOG.error(f"Pass failed ({cause}), retried in {backoff:g} s", namespace=self.key[0],
                      name=self.key[1], error=str(err), exc_info=err)  # fmt: skip
            self.parts.metrics.count(ERRORS, ERRORS_HELP, reason=cause)
            return backoff, 0.0
        self.failures = 0
        self.rolling = done.action == "RollForward"
        config = self.parts.config
        wait = min(config.resync_seconds, done.recheck_seconds or config.resync_seconds)
        if w.settled(done):
            wait = w.safety_net(config.resync_seconds, self.models())
        return wait, w.pause(config.debounce_seconds, cpu)
