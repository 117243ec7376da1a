"""Telemetry without Prometheus: read a bounded number of model-server pods' /metrics and
turn two readings of the same pod into rates (reconcile/telemetry.PodRates).

The sampler remembers each pod's last reading (by pod uid), so the first reading of a pod
gives no figures yet; the window is the time between its two readings."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from edgemodel_operator.reconcile.health import pod_ready
from edgemodel_operator.reconcile.probes import serving_port
from edgemodel_operator.reconcile.telemetry import PodRates

FORGET_SECONDS = 3600.0  # readings of pods not seen for this long are dropped


@dataclass
class Reading:
    at: float
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)


def parse(text: str) -> Reading:
    """Totals over every series of the server's request metrics."""
    reading = Reading(at=time.monotonic())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "edgemodel_inference_requests_total":
                reading.requests += sample.value
            elif sample.name == "edgemodel_inference_errors_total":
                reading.errors += sample.value
            elif sample.name == "edgemodel_request_duration_seconds_bucket":
                bound = float(sample.labels.get("le", "nan"))
                if not math.isnan(bound):
                    reading.buckets[bound] = reading.buckets.get(bound, 0.0) + sample.value
    return reading


class PodSampler:
    def __init__(self, max_pods: int, timeout: float = 1.0) -> None:
        self.max_pods = max_pods
        self.timeout = timeout
        self._lock = threading.Lock()
        self._last: dict[str, Reading] = {}
        self._http = requests.Session()

    def rates(self, pods: Sequence[Mapping[str, Any]]) -> tuple[dict[str, PodRates], float]:
        """Rates of up to max_pods Ready pods (by name) that were read before, and the
        longest time between two readings."""
        chosen = sorted(
            (
                p
                for p in pods
                if pod_ready(p) and (p.get("status") or {}).get("podIP") and serving_port(p)
            ),
            key=lambda p: str(p["metadata"]["name"]),
        )[: self.max_pods]
        out: dict[str, PodRates] = {}
        window = 0.0
        for pod in chosen:
            meta = pod["metadata"]
            key = str(meta.get("uid") or meta["name"])
            url = f"http://{pod['status']['podIP']}:{serving_port(pod)}/metrics"
            try:
                answer = self._http.get(url, timeout=self.timeout)
                answer.raise_for_status()
                now = parse(answer.text)
            except (requests.RequestException, ValueError):
                continue  # an unreachable pod is left out of the figures
            with self._lock:
                before = self._last.get(key)
                self._last[key] = now
            if before is None or now.at <= before.at or now.requests < before.requests:
                continue  # first reading, or the server restarted: no rate yet
            seconds = now.at - before.at
            window = max(window, seconds)
            out[str(meta["name"])] = PodRates(
                requests=(now.requests - before.requests) / seconds,
                errors=max(0.0, now.errors - before.errors) / seconds,
                buckets={
                    b: max(0.0, v - before.buckets.get(b, 0.0)) / seconds
                    for b, v in now.buckets.items()
                },
            )
        self._forget()
        return out, window

    def _forget(self) -> None:
        limit = time.monotonic() - FORGET_SECONDS
        with self._lock:
            for key in [k for k, r in self._last.items() if r.at < limit]:
                del self._last[key]

    def close(self) -> None:
        self._http.close()
