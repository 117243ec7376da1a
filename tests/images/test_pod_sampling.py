"""Telemetry without Prometheus: the operator's pod sampler reads a real model server's
/metrics twice and turns the difference into the rates status.telemetry shows."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from digits import DigitsModel
from test_server import MODEL, Client, _config, _infer_json, _start

from edgemodel_operator.adapters.pod_metrics import PodSampler
from edgemodel_operator.reconcile.telemetry import cohorts
from edgemodel_server.app import drain


def _pod(port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits-cpu-0", "uid": "u1",
                     "labels": {"edgeai.dev/target": "cpu", "edgeai.dev/accelerator": "cpu"}},
        "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "http",
                                                             "containerPort": port}]}]},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip


def test_two_readings_of_a_server_give_its_rates_and_latency(digits_model: DigitsModel) -> None:
    server, thread = _start(_config(digits_model.model))
    client = Client(server.port)
    sampler = PodSampler(max_pods=3)
    try:
        pods = [_pod(server.port)]
        assert sampler.rates(pods) == ({}, 0.0)  # one reading: no rate yet
        started = time.monotonic()
        good = _infer_json(np.zeros((1, 64), np.float32))
        for _ in range(30):
            assert client.call("POST", f"/v2/models/{MODEL}/infer", good).status == 200
        for _ in range(10):
            assert client.call("POST", f"/v2/models/{MODEL}/infer", {"inputs": []}).status == 400
        time.sleep(0.5)
        rates, window = sampler.rates(pods)
        elapsed = time.monotonic() - started
        assert elapsed * 0.8 < window <= elapsed + 0.5
        (found,) = rates.values()
        assert found.requests * window == pytest.approx(40, rel=0.01)
        assert found.errors * window == pytest.approx(10, rel=0.01)
        node = {
            "metadata": {
                "name": "n1",
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "box",
                },
            }
        }
        (cohort,) = cohorts(rates, pods, [node])  # fmt: skip
        assert (cohort["architecture"], cohort["nodeModel"], cohort["errorRate"]) == (
            "amd64", "box", 0.25)  # fmt: skip
        assert 0 < cohort["latencyP50Seconds"] <= cohort["latencyP99Seconds"] < 0.5
    finally:
        client.close()
        sampler.close()
        drain(server, 1.0)
        thread.join(timeout=5)
