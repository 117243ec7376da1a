"""One pass per EdgeModel at a time. kopf runs an object's timer beside its change
handlers: two passes at once would decide from the same observation and both act."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class OnePassAtATime:
    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def forget(self, key: str) -> None:
        with self._guard:
            self._locks.pop(key, None)
