"""Metrics rendering and the status merge patch."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from edgemodel_operator.adapters.metrics_http import serve
from edgemodel_operator.config import ConfigError, load_config
from edgemodel_operator.metrics import Metrics
from edgemodel_operator.reconcile.status import status_patch


def test_counters_and_histogram_render_in_text_format() -> None:
    metrics = Metrics()
    metrics.count("edgemodel_rollbacks_total", "Rollbacks.", namespace="line-3", edgemodel="a")
    metrics.count("edgemodel_rollbacks_total", "Rollbacks.", namespace="line-3", edgemodel="a")
    metrics.observe_reconcile(0.003)
    metrics.observe_reconcile(0.2)
    text = metrics.render().decode()
    assert 'edgemodel_rollbacks_total{edgemodel="a",namespace="line-3"} 2.0' in text
    assert "# TYPE edgemodel_rollbacks_total counter" in text
    assert 'edgemodel_reconcile_duration_seconds_bucket{le="0.005"} 1.0' in text
    assert 'edgemodel_reconcile_duration_seconds_bucket{le="+Inf"} 2.0' in text
    assert "edgemodel_reconcile_duration_seconds_count 2.0" in text


def test_metrics_are_served_on_the_configured_address_only() -> None:
    metrics = Metrics()
    metrics.count("edgemodel_events_total", "Events.", type="Normal", reason="Created")
    server = serve("127.0.0.1:0", metrics.render)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as rsp:
            text = rsp.read().decode()
            assert 'edgemodel_events_total{reason="Created",type="Normal"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/")
    finally:
        server.shutdown()
    assert load_config({}).metrics_address == ""
    with pytest.raises(ConfigError, match="EDGEMODEL_METRICS_ADDRESS"):
        load_config({"EDGEMODEL_METRICS_ADDRESS": "9090"})


def test_gauges_follow_the_status_and_are_dropped_with_the_edgemodel() -> None:
    metrics = Metrics()
    body = {"metadata": {"namespace": "ns", "name": "m"}, "spec": {"model": {"version": "2"}}}
    status = {
        "revision": "r2",
        "stable": {"revision": "r1", "spec": {"model": {"version": "1"}}},
        "conditions": [{"type": "Degraded", "status": "True", "reason": "RolledBack"}],
        "targets": [{"name": "cpu", "accelerator": "cpu", "desired": 2, "ready": 1}],
    }

    def pod(revision: str, ready: bool) -> dict[str, Any]:
        return {"metadata": {"labels": {"edgeai.dev/target": "cpu"},
                             "annotations": {"edgeai.dev/revision": revision}},
                "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}  # fmt: skip

    pods = [pod("r1", True), pod("r1", True), pod("r2", True), pod("r2", False)]
    metrics.observe_status(body, status, pods)
    text = metrics.render().decode()
    degraded = 'edgemodel_condition{condition="Degraded",edgemodel="m",namespace="ns",'
    assert degraded + 'reason="RolledBack"} 1.0' in text
    assert 'state="ready",target="cpu"} 1.0' in text and 'state="updated",target="cpu"} 0.0' in text
    spread = 'edgemodel_revision_pods{edgemodel="m",namespace="ns",revision="%s",version="%s"} %s'
    assert spread % ("r1", "1", "2.0") in text and spread % ("r2", "2", "1.0") in text

    status["conditions"] = [{"type": "Degraded", "status": "False", "reason": "AsExpected"}]
    metrics.observe_status(body, status, pods[:2])
    text = metrics.render().decode()
    assert "RolledBack" not in text and degraded + 'reason="AsExpected"} 0.0' in text
    assert 'revision="r2"' not in text
    metrics.forget("ns", "m")
    assert 'edgemodel="m"' not in metrics.render().decode()


def test_status_patch_nulls_removed_keys_and_skips_unchanged() -> None:
    old = {"phase": "Ready", "rollout": {"revision": "a", "readySince": "t"}, "gone": 1}
    new = {"phase": "Ready", "rollout": {"revision": "b"}, "targets": []}
    assert status_patch(old, new) == {
        "gone": None,
        "rollout": {"revision": "b", "readySince": None},
        "targets": [],
    }
    assert status_patch(new, new) == {}


def test_the_rollout_reads_in_a_fleet_owners_numbers() -> None:
    metrics = Metrics()
    body = {"metadata": {"namespace": "ns", "name": "fleet"}}
    progress = {"unit": "nodes", "total": 1500, "updated": 1493, "failed": 2, "unavailable": 5,
                "durationSeconds": 312}  # fmt: skip
    metrics.observe_status(body, {"revision": "r2", "rollout": {"progress": progress}})
    text = metrics.render().decode()
    for state, value in (("total", 1500), ("updated", 1493), ("failed", 2), ("unavailable", 5)):
        assert (f'edgemodel_rollout_units{{edgemodel="fleet",namespace="ns",revision="r2",'
                f'state="{state}",unit="nodes"}} {value}.0') in text  # fmt: skip
    assert ('edgemodel_rollout_duration_seconds{edgemodel="fleet",namespace="ns",'
            'revision="r2"} 312.0') in text  # fmt: skip
