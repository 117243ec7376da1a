"""status.telemetry: quantiles read from buckets as PromQL does, pods grouped into hardware
cohorts, Prometheus's per-pod series turned into rates, and when figures are refreshed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixtures import node

from edgemodel_operator.reconcile.telemetry import (
    PodRates,
    cohorts,
    due,
    from_series,
    quantile,
    queries,
    telemetry_status,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {0.1: 50.0, 0.2: 100.0, INF: 100.0}, 0.1),  # exactly at a bucket's top
        (0.75, {0.1: 50.0, 0.2: 100.0, INF: 100.0}, 0.15),  # interpolated inside a bucket
        (0.99, {0.1: 0.0, 0.25: 10.0, INF: 10.0}, 0.2485),
        (0.5, {0.1: 1.0, INF: 10.0}, 0.1),  # in +Inf: the last finite bound
        (0.5, {0.1: 0.0, INF: 0.0}, None),  # no requests
        (0.5, {0.1: 1.0}, None),  # no +Inf bucket: not a histogram
    ],
)
def test_quantile_reads_buckets_like_histogram_quantile(
    q: float, buckets: dict[float, float], expected: float | None
) -> None:
    found = quantile(q, buckets)
    assert found == pytest.approx(expected) if expected is not None else found is None


def pod(name: str, target: str, accelerator: str, node_name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"edgeai.dev/target": target,
                                                  "edgeai.dev/accelerator": accelerator}},
            "spec": {"nodeName": node_name}}  # fmt: skip


NODES = [
    node("orin-0", "gpu", "arm64", labels={"node.kubernetes.io/instance-type": "jetson-orin"}),
    node("orin-1", "gpu", "arm64", labels={"node.kubernetes.io/instance-type": "jetson-orin"}),
    node("x86-0", "gpu", "amd64", labels={"node.kubernetes.io/instance-type": "g4dn"}),
]


def test_pods_are_grouped_by_target_accelerator_architecture_and_node_model() -> None:
    pods = [pod("a", "gpu", "gpu", "orin-0"), pod("b", "gpu", "gpu", "orin-1"),
            pod("c", "gpu", "gpu", "x86-0"), pod("quiet", "gpu", "gpu", "x86-0")]  # fmt: skip
    rates = {
        "a": PodRates(10.0, 1.0, {0.01: 5.0, 0.1: 10.0, INF: 10.0}),
        "b": PodRates(30.0, 0.0, {0.01: 30.0, 0.1: 30.0, INF: 30.0}),
        "c": PodRates(4.0, 0.0, {0.01: 0.0, 0.1: 4.0, INF: 4.0}),
    }
    found = cohorts(rates, pods, NODES)
    assert found == [
        {"target": "gpu", "accelerator": "gpu", "architecture": "amd64", "nodeModel": "g4dn",
         "pods": 1, "requestsPerSecond": 4.0, "errorRate": 0.0,
         "latencyP50Seconds": pytest.approx(0.055), "latencyP99Seconds": pytest.approx(0.0991)},
        {"target": "gpu", "accelerator": "gpu", "architecture": "arm64",
         "nodeModel": "jetson-orin", "pods": 2, "requestsPerSecond": 40.0, "errorRate": 0.025,
         "latencyP50Seconds": pytest.approx(0.01 * 20 / 35, abs=1e-6),
         "latencyP99Seconds": pytest.approx(0.01 + 0.09 * (39.6 - 35) / 5, abs=1e-6)},
    ]  # fmt: skip


def test_prometheus_series_become_per_pod_rates() -> None:
    found = {
        "requests": [({"pod": "a"}, 2.0), ({"pod": "b"}, float("nan"))],
        "errors": [({"pod": "a"}, 0.5)],
        "buckets": [({"pod": "a", "le": "0.1"}, 1.0), ({"pod": "a", "le": "+Inf"}, 2.0)],
    }
    rates = from_series(found)
    assert rates == {"a": PodRates(2.0, 0.5, {0.1: 1.0, INF: 2.0})}
    asked = queries("line-3", "digits", 60)
    assert asked["requests"] == (
        'sum by (pod) (rate(edgemodel_inference_requests_total{namespace="line-3",'
        'model="digits"}[60s]))'
    )
    assert asked["buckets"].startswith("sum by (pod, le) (rate(edgemodel_request_duration")


def test_figures_are_refreshed_every_half_window() -> None:
    status = {"telemetry": telemetry_status("prometheus", 60, [], T0)}
    assert due({}, T0, 30)
    assert not due(status, T0 + timedelta(seconds=29), 30)
    assert due(status, T0 + timedelta(seconds=30), 30)
