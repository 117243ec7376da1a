"""Read your own writes over the watch-fed indices.

A pass decides from kopf's indices, which lag behind the operator's own writes (a watch
reconnecting after a partition can lag for its whole inactivity timeout). Without this, the
next pass sees the old child, applies it again and announces the update again. Each write
is remembered with the resourceVersion the index showed before it; while the index still
shows that version (it has not caught up), the pass sees what the API server answered
instead (for a delete: nothing). Once the index moves, or after `ttl`, it is trusted again:
an edit by hand after the write still counts as drift. What the API server answered is kept
without its managedFields, and writes past `ttl` are dropped for every model now and then:
a thousand settled models would otherwise hold their last answers for good."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from edgemodel_operator.reconcile.observed import Observed, lean

Model = tuple[str, str]  # namespace, EdgeModel name
Child = tuple[str, str]  # kind, name


@dataclass(frozen=True)
class _Write:
    before: str | None  # resourceVersion the index showed; None: it showed nothing
    after: Mapping[str, Any] | None  # what the API server stored; None: deleted
    at: float


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else str((obj.get("metadata") or {}).get("resourceVersion"))


class RecentWrites:
    def __init__(self, ttl: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._writes: dict[Model, dict[Child, _Write]] = {}
        self._lock = threading.Lock()
        self._swept = clock()

    def applied(self, model: Model, live: Mapping[str, Any] | None,
                stored: Mapping[str, Any]) -> None:  # fmt: skip
        child = (str(stored["kind"]), str(stored["metadata"]["name"]))
        self._remember(model, child, _Write(_version(live), lean(stored), self._clock()))

    def deleted(self, model: Model, kind: str, live: Mapping[str, Any] | None) -> None:
        if live is None:
            return
        child = (kind, str(live["metadata"]["name"]))
        self._remember(model, child, _Write(_version(live), None, self._clock()))

    def _remember(self, model: Model, child: Child, write: _Write) -> None:
        with self._lock:
            self._writes.setdefault(model, {})[child] = write
            if write.at - self._swept > self._ttl:
                self._swept = write.at
                for key, writes in list(self._writes.items()):
                    for old in [c for c, w in writes.items() if write.at - w.at > self._ttl]:
                        del writes[old]
                    if not writes:
                        del self._writes[key]

    def held(self) -> int:
        """How many writes are remembered now, over all models."""
        with self._lock:
            return sum(len(writes) for writes in self._writes.values())

    def overlay(self, model: Model, observed: Observed) -> Observed:
        """`observed`, with the model's writes that the indices have not caught up with."""
        now = self._clock()
        with self._lock:
            writes = self._writes.get(model, {})
            for child in [c for c, w in writes.items() if now - w.at > self._ttl]:
                del writes[child]
            mine = dict(writes)
        if not mine:
            return observed

        def resolve(kind: str, items: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
            out, seen = [], set()
            for item in items:
                child = (kind, str(item["metadata"]["name"]))
                seen.add(child)
                write = mine.get(child)
                if write is None or _version(item) != write.before:
                    self._forget(model, child, write)  # the index moved on: current again
                    out.append(item)
                elif write.after is not None:
                    out.append({**write.after, "kind": kind} if kind != "Pod" else write.after)
            for child, write in mine.items():  # written, not in the index yet at all
                new = write.before is None and write.after is not None
                if child[0] == kind and child not in seen and new and write.after is not None:
                    out.append({**write.after, "kind": kind})
            return out

        kinds = {str(c["kind"]) for c in observed.children} | {k for k, _ in mine if k != "Pod"}
        children: list[Mapping[str, Any]] = []
        for kind in sorted(kinds):
            children += resolve(kind, [c for c in observed.children if c["kind"] == kind])
        return replace(observed, children=children, pods=resolve("Pod", list(observed.pods)))

    def _forget(self, model: Model, child: Child, write: _Write | None) -> None:
        if write is None:
            return
        with self._lock:
            writes = self._writes.get(model, {})
            if writes.get(child) is write:
                del writes[child]
