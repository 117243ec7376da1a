"""The server's Prometheus metrics, through prometheus-client.

Every request series carries what was served: model, version, accelerator, precision,
execution provider, and the EdgeModel target and revision the pod belongs to (from the
pod, through EDGEMODEL_TARGET and EDGEMODEL_REVISION), so that a query can select the pods
of one revision without relabeling in the scraper.

With several worker processes (workers.py) every worker writes its figures to files in
PROMETHEUS_MULTIPROC_DIR (set by the supervisor before the workers import this module)
and whichever worker answers a scrape sums all of them: one scrape sees the whole pod.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Request latency in seconds: a small model on a CPU answers in about a millisecond, a
# large one on a busy edge board in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
SERVED = ("model", "version", "accelerator", "precision", "provider", "target", "revision")
NOT_LOADED = "none"  # the provider label before the model is loaded


class Metrics:
    """The server's metrics; every method may be called from any thread.

    `labels`: the served labels other than model and provider (version, accelerator,
    precision, target, revision). `multiprocess_dir`: where the workers' figures are
    collected from; by default PROMETHEUS_MULTIPROC_DIR, when set."""

    def __init__(
        self, labels: Mapping[str, str] | None = None, multiprocess_dir: str | None = None
    ) -> None:
        self._multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        self._lock = threading.Lock()
        fixed = dict(labels or {})
        self._static = {k: fixed.get(k, "") for k in SERVED if k not in ("model", "provider")}
        self._provider = NOT_LOADED
        # In multiprocess mode the values live in files; the registry only serves scrapes.
        self.registry = CollectorRegistry()
        own = None if self._multiprocess_dir else self.registry
        served = list(SERVED)
        self._requests = Counter(
            "edgemodel_inference_requests", "Inference requests answered, by HTTP status code.",
            [*served, "code"], registry=own,
        )  # fmt: skip
        self._errors = Counter(
            "edgemodel_inference_errors",
            "Inference requests answered with an error (HTTP status 400 or above).",
            [*served, "code"], registry=own,
        )  # fmt: skip
        self._request_seconds = Histogram(
            "edgemodel_request_duration_seconds",
            "Time from an inference request's arrival to its answer, errors included.",
            served, buckets=BUCKETS, registry=own,
        )  # fmt: skip
        self._inference_seconds = Histogram(
            "edgemodel_inference_duration_seconds",
            "Time the model itself took (onnxruntime's run) for requests that reached it.",
            served, buckets=BUCKETS, registry=own,
        )  # fmt: skip
        self._batch = Histogram(
            "edgemodel_inference_batch_size",
            "Rows (the first dimension of the first input) per inference that reached the model.",
            served, buckets=BATCH_BUCKETS, registry=own,
        )  # fmt: skip
        self._in_flight = Gauge(
            "edgemodel_requests_in_flight", "Inference requests being answered now.",
            served, registry=own, multiprocess_mode="livesum",
        )  # fmt: skip
        self._ready = Gauge(
            "edgemodel_model_ready",
            "1 when the model is loaded and serving (in every worker), else 0.",
            ["model"], registry=own, multiprocess_mode="livemin",
        )  # fmt: skip
        self._load_seconds = Gauge(
            "edgemodel_model_load_seconds", "Seconds it took to load the model into onnxruntime.",
            ["model"], registry=own, multiprocess_mode="livemax",
        )  # fmt: skip
        self._provider_info = Gauge(
            "edgemodel_execution_provider",
            "Always 1; the labels tell the onnxruntime execution provider in use.",
            ["model", "accelerator", "provider", "fallback"], registry=own,
            multiprocess_mode="livemax",
        )  # fmt: skip

    def _labels(self, model: str) -> dict[str, str]:
        return {"model": model, "provider": self._provider, **self._static}

    @contextmanager
    def in_flight(self, model: str) -> Iterator[None]:
        gauge = self._in_flight.labels(**self._labels(model))
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def observe_request(
        self,
        model: str,
        status: int,
        seconds: float,
        inference_seconds: float | None = None,
        batch: int | None = None,
    ) -> None:
        """Count one inference request and its latency; `inference_seconds` and `batch`
        when it reached the model."""
        labels = self._labels(model)
        self._requests.labels(**labels, code=str(status)).inc()
        if status >= 400:
            self._errors.labels(**labels, code=str(status)).inc()
        self._request_seconds.labels(**labels).observe(seconds)
        if inference_seconds is not None:
            self._inference_seconds.labels(**labels).observe(inference_seconds)
        if batch is not None:
            self._batch.labels(**labels).observe(batch)

    def set_model_loaded(self, model: str, seconds: float) -> None:
        self._load_seconds.labels(model=model).set(seconds)

    def set_ready(self, model: str, ready: bool) -> None:
        self._ready.labels(model=model).set(1.0 if ready else 0.0)

    def set_provider(self, model: str, accelerator: str, provider: str, fell_back: bool) -> None:
        """The provider in use: a label of the request series from now on, and one
        info series with value 1."""
        with self._lock:
            self._provider = provider
        fallback = "true" if fell_back else "false"
        self._provider_info.labels(model=model, accelerator=accelerator, provider=provider,
                                   fallback=fallback).set(1.0)  # fmt: skip

    def render(self) -> bytes:
        if self._multiprocess_dir:
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def worker_exited(pid: int, multiprocess_dir: str) -> None:
    """Drop a dead worker's live gauges (its counters stay: they only ever grow)."""
    _multiprocess.mark_process_dead(pid, multiprocess_dir)  # type: ignore[no-untyped-call]
