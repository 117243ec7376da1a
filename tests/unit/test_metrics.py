"""Metrics rendering and the status merge patch."""

from __future__ import annotations

import urllib.request

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
    text = metrics.render()
    assert 'edgemodel_rollbacks_total{edgemodel="a",namespace="line-3"} 2' in text
    assert "# TYPE edgemodel_rollbacks_total counter" in text
    assert 'edgemodel_reconcile_duration_seconds_bucket{le="0.005"} 1' in text
    assert 'edgemodel_reconcile_duration_seconds_bucket{le="+Inf"} 2' in text
    assert "edgemodel_reconcile_duration_seconds_count 2" in text


def test_metrics_are_served_on_the_configured_address_only() -> None:
    metrics = Metrics()
    metrics.count("edgemodel_events_total", "Events.", type="Normal", reason="Created")
    server = serve("127.0.0.1:0", metrics.render)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as rsp:
            assert 'edgemodel_events_total{reason="Created",type="Normal"} 1' in rsp.read().decode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/")
    finally:
        server.shutdown()
    assert load_config({}).metrics_address == ""
    with pytest.raises(ConfigError, match="EDGEMODEL_METRICS_ADDRESS"):
        load_config({"EDGEMODEL_METRICS_ADDRESS": "9090"})


def test_status_patch_nulls_removed_keys_and_skips_unchanged() -> None:
    old = {"phase": "Ready", "rollout": {"revision": "a", "readySince": "t"}, "gone": 1}
    new = {"phase": "Ready", "rollout": {"revision": "b"}, "targets": []}
    assert status_patch(old, new) == {
        "gone": None,
        "rollout": {"revision": "b", "readySince": None},
        "targets": [],
    }
    assert status_patch(new, new) == {}
