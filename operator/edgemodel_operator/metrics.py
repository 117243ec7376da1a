"""The operator's Prometheus metrics: a few counters and a histogram, rendered by hand in
the text exposition format (no client library needed for this handful of series)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped, strict=True)) + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._durations: dict[int, int] = defaultdict(int)  # bucket index -> count
        self._duration_sum = 0.0
        self._duration_count = 0

    def count(self, name: str, help_: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._help[name] = help_
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def observe_reconcile(self, seconds: float) -> None:
        with self._lock:
            self._durations[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._duration_sum += seconds
            self._duration_count += 1

    def render(self) -> str:
        with self._lock:
            lines: list[str] = []
            for name in sorted(self._counters):
                lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
                lines += [
                    f"{name}{_labels(k)} {v:g}" for k, v in sorted(self._counters[name].items())
                ]
            lines += list(self._histogram())
            return "\n".join(lines) + "\n"

    def _histogram(self) -> Iterable[str]:
        name = "edgemodel_reconcile_duration_seconds"
        yield f"# HELP {name} Time one reconcile of an EdgeModel took."
        yield f"# TYPE {name} histogram"
        running = 0
        for i, bound in enumerate(LATENCY_BUCKETS):
            running += self._durations.get(i, 0)
            yield f'{name}_bucket{{le="{bound:g}"}} {running}'
        yield f'{name}_bucket{{le="+Inf"}} {self._duration_count}'
        yield f"{name}_sum {self._duration_sum:.6f}"
        yield f"{name}_count {self._duration_count}"
