"""One asyncio task per EdgeModel, started by its first watch event and stopped when it is
deleted, leaves the operator's selector, or the operator stops.

Plain tasks rather than kopf daemons: a daemon needs kopf's finalizer on every EdgeModel (a
write per model, another at its deletion, and a namespace that cannot be deleted once the
operator is gone) and keeps the whole last-seen object, managedFields and all, for each. A
worker keeps its model's latest version packed (compact JSON), decoded once per pass."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from edgemodel_operator.reconcile.observed import Packed, packed

LOG = structlog.get_logger("edgemodel_operator")
Key = tuple[str, str]  # namespace, EdgeModel name
RESTART_SECONDS = 5.0  # after a worker failed outside its passes (they catch their own)


@dataclass
class Worker:
    body: Packed  # the model as its latest watch event showed it
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    deleted: bool = False  # stopped because the model was deleted (not the operator)
    task: asyncio.Task[None] | None = None


# What a worker runs: the model's passes until worker.stopped; with kopf's indices.
Run = Callable[[Key, Worker, Mapping[str, Any]], Awaitable[None]]


class Workers:
    def __init__(self, run: Run) -> None:
        self._run = run
        self._running: dict[Key, Worker] = {}
        self._stopping: dict[Key, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def seen(self, key: Key, body: Mapping[str, Any], indices: Mapping[str, Any]) -> None:
        """The model's latest version: its worker reads it from its next pass on; started
        here if none runs (after the one of a model of the same name deleted before)."""
        if (worker := self._running.get(key)) is not None:
            worker.body = packed(body)
            return
        worker = self._running[key] = Worker(packed(body))
        before = self._stopping.get(key)
        worker.task = asyncio.create_task(self._supervise(key, worker, indices, before))

    def gone(self, key: Key, deleted: bool) -> None:
        """Stop the model's worker once its current pass is over."""
        worker = self._running.pop(key, None)
        if worker is None or worker.task is None:
            return
        worker.deleted = deleted
        worker.stopped.set()
        self._stopping[key] = worker.task
        worker.task.add_done_callback(lambda t: self._forget(key, t))

    def _forget(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._stopping.get(key) is task:
            del self._stopping[key]

    async def stop_all(self, timeout: float) -> None:
        """At the operator's exit: every worker stops; those still busy after `timeout`
        seconds are cancelled."""
        for key in list(self._running):
            self.gone(key, deleted=False)
        tasks = list(self._stopping.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()

    async def _supervise(self, key: Key, worker: Worker, indices: Mapping[str, Any],
                         before: asyncio.Task[None] | None) -> None:  # fmt: skip
        if before is not None:  # a model of the same name, deleted: its worker ends first
            with contextlib.suppress(BaseException):
                await before
        while not worker.stopped.is_set():
            try:
                await self._run(key, worker, indices)
            except Exception as err:
                LOG.error("The worker failed; restarted", namespace=key[0], name=key[1],
                          error=str(err), exc_info=err)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.stopped.wait(), RESTART_SECONDS)
