"""The EdgeModel workers' alarm clocks: one asyncio.Event per model, set by the watch
events that concern it (reconcile/wakeups.py decides which) and waited on by its worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from edgemodel_operator.api.accelerators import AcceleratorProfile
from edgemodel_operator.reconcile import wakeups as w


class Wakeups:
    def __init__(self, profiles: Mapping[str, AcceleratorProfile]) -> None:
        self._profiles = profiles
        self._events: dict[w.Key, asyncio.Event] = {}
        self._accelerators: dict[w.Key, frozenset[str]] = {}
        self._essences: dict[w.Key, tuple[Any, ...]] = {}
        self._nodes: dict[str, tuple[tuple[Any, ...], frozenset[str]]] = {}
        self._failing: set[w.Key] = set()  # woken by a pod showing failing evidence

    def __len__(self) -> int:
        return len(self._events)

    def join(self, key: w.Key, accelerators: Iterable[str]) -> asyncio.Event:
        self._accelerators[key] = frozenset(accelerators)
        return self._events.setdefault(key, asyncio.Event())

    def update(self, key: w.Key, accelerators: Iterable[str]) -> None:
        self._accelerators[key] = frozenset(accelerators)

    def leave(self, key: w.Key) -> None:
        for table in (self._events, self._accelerators, self._essences):
            table.pop(key, None)
        self._failing.discard(key)

    def wake(self, key: w.Key, failing: bool = False) -> None:
        if (event := self._events.get(key)) is not None:
            event.set()
            if failing:
                self._failing.add(key)

    def pod(self, key: w.Key, body: Mapping[str, Any]) -> None:
        """A pod's watch event: wake its model, saying whether the pod shows failing
        evidence (a crash loop, a failed probe, readiness lost)."""
        self.wake(key, w.failing(body))

    def woken_by_failing_pod(self, key: w.Key) -> bool:
        """Whether a failing pod woke the model since the last ask."""
        found = key in self._failing
        self._failing.discard(key)
        return found

    def model(self, key: w.Key, essence: tuple[Any, ...]) -> None:
        """The model's own watch event: wake it when more than its status changed."""
        if self._essences.get(key) != essence:
            self._essences[key] = essence
            self.wake(key)

    def node(self, name: str, body: Mapping[str, Any] | None) -> None:
        """A node's watch event (None: deleted): wake the models that may run on its
        accelerators, before or after the change, when placement would see a difference."""
        before = self._nodes.pop(name, None)
        after = None
        if body is not None:
            labels = (body.get("metadata") or {}).get("labels") or {}
            after = (w.node_signature(body), w.node_accelerators(labels, self._profiles))
            self._nodes[name] = after
        if before is not None and after is not None and before[0] == after[0]:
            return
        concerned = (before[1] if before else frozenset()) | (after[1] if after else frozenset())
        for key, accelerators in self._accelerators.items():
            if accelerators & concerned:
                self.wake(key)

    @staticmethod
    async def wait(wake: asyncio.Event, stopped: asyncio.Event, timeout: float) -> bool:
        """Until woken, stopped or `timeout` seconds have passed; whether it was woken."""
        waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return wake.is_set()
