"""Prometheus metrics in the text exposition format (0.0.4), written by hand.

Thread-safe counters, one latency histogram and gauges; `render()` produces the page
served at /metrics.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Inference latency buckets in seconds: a small model on a CPU answers in about a millisecond.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [*labels, *extra]
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    count: int = 0


class Metrics:
    """The server's metrics; every method may be called from any thread."""

    def __init__(self, worker: str | None = None) -> None:
        """`worker`: with several server processes, each labels its series worker="N"."""
        self._worker: Labels = (("worker", worker),) if worker is not None else ()
        self._lock = threading.Lock()
        self._requests: dict[Labels, int] = {}
        self._latency: dict[Labels, _Histogram] = {}
        self._load_seconds: dict[Labels, float] = {}
        self._ready: dict[Labels, float] = {}
        self._provider: dict[Labels, float] = {}

    def observe_request(self, model: str, status: int, seconds: float | None) -> None:
        """Count one inference request; record its latency if it reached the model."""
        with self._lock:
            key = (("model", model), ("status", str(status)))
            self._requests[key] = self._requests.get(key, 0) + 1
            if seconds is None:
                return
            hist = self._latency.setdefault((("model", model),), _Histogram())
            index = bisect.bisect_left(BUCKETS, seconds)
            for i in range(index, len(BUCKETS)):
                hist.counts[i] += 1
            hist.total += seconds
            hist.count += 1

    def set_model_loaded(self, model: str, seconds: float) -> None:
        with self._lock:
            self._load_seconds[(("model", model),)] = seconds

    def set_ready(self, model: str, ready: bool) -> None:
        with self._lock:
            self._ready[(("model", model),)] = 1.0 if ready else 0.0

    def set_provider(self, model: str, accelerator: str, provider: str, fell_back: bool) -> None:
        """One series per model with value 1; its labels tell the provider in use."""
        with self._lock:
            self._provider = {
                key: value for key, value in self._provider.items() if key[0] != ("model", model)
            }
            key = (
                ("model", model),
                ("accelerator", accelerator),
                ("provider", provider),
                ("fallback", "true" if fell_back else "false"),
            )
            self._provider[key] = 1.0

    def _tagged(self, series: Mapping[Labels, float]) -> dict[Labels, float]:
        return {(*self._worker, *labels): value for labels, value in series.items()}

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            _family(
                lines,
                "edgemodel_inference_requests_total",
                "counter",
                "Inference requests answered, by model and HTTP status.",
                self._tagged(self._requests),
            )
            lines.append(
                "# HELP edgemodel_inference_duration_seconds Time spent answering inference "
                "requests that reached the model."
            )
            lines.append("# TYPE edgemodel_inference_duration_seconds histogram")
            for labels, hist in sorted(self._latency.items()):
                name = "edgemodel_inference_duration_seconds"
                labels = (*self._worker, *labels)
                for bound, count in zip(BUCKETS, hist.counts, strict=True):
                    le = (("le", _number(bound)),)
                    lines.append(f"{name}_bucket{_labels(labels, le)} {count}")
                inf = (("le", "+Inf"),)
                lines.append(f"{name}_bucket{_labels(labels, inf)} {hist.count}")
                lines.append(f"{name}_sum{_labels(labels)} {_number(hist.total)}")
                lines.append(f"{name}_count{_labels(labels)} {hist.count}")
            _family(
                lines,
                "edgemodel_model_load_seconds",
                "gauge",
                "Seconds it took to load the model into onnxruntime.",
                self._tagged(self._load_seconds),
            )
            _family(
                lines,
                "edgemodel_model_ready",
                "gauge",
                "1 when the model is loaded and serving, else 0.",
                self._tagged(self._ready),
            )
            _family(
                lines,
                "edgemodel_execution_provider",
                "gauge",
                "Always 1; the labels tell the onnxruntime execution provider in use.",
                self._tagged(self._provider),
            )
        return "\n".join(lines) + "\n"


def _family(
    lines: list[str], name: str, kind: str, help_text: str, series: Mapping[Labels, float]
) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in sorted(series.items()):
        lines.append(f"{name}{_labels(labels)} {_number(value)}")
