"""Smoke test of the benchmark runner: the suites that need no cluster, at size tiny.

Takes a few seconds. The cluster suites (fleet, rollback, footprint) start a cluster of
their own and take about a minute each at size tiny; set BENCH_SMOKE_CLUSTER=1 to run them
too (they need the binaries of hack/build-tools.sh and free ports 18443..18480)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent / "run.py"
MACHINE_KEYS = {"cpu_model", "cores", "ram_gib", "kernel", "python", "versions"}


def run(suite: str, out: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--suite", suite, "--size", "tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / f"{suite}.json").read_text())
    assert doc["suite"] == suite and doc["size"] == "tiny" and doc["status"] == "ok"
    assert not MACHINE_KEYS - set(doc["machine"])
    assert (out / "summary.md").read_text().count(f"## {suite} ") == 1
    figures: dict[str, object] = doc["figures"]
    return figures


def test_optimize_suite_reports_every_variant(tmp_path: Path) -> None:
    figures = run("optimize", tmp_path)
    variants = figures["variants"]
    assert isinstance(variants, dict)
    assert set(variants) == {"fp32", "fp16", "int8-dynamic", "int8-static"}
    for row in variants.values():
        for key in ("size_bytes", "load_ms_median", "batch1_ms_p50", "batch1_ms_p99",
                    "batch32_ms_p50", "batch32_ms_p99", "accuracy"):  # fmt: skip
            assert row[key] > 0, key
    assert variants["int8-dynamic"]["size_bytes"] < variants["fp32"]["size_bytes"]


def test_serving_suite_compares_server_and_direct(tmp_path: Path) -> None:
    figures = run("serving", tmp_path)
    results = figures["results"]
    assert isinstance(results, dict)
    assert set(results) == {"concurrency_1", "concurrency_8"}
    for case in results.values():
        assert set(case) == {"direct_onnxruntime", "server_json", "server_binary"}
        for path in case.values():
            assert path["ms_p50"] > 0 and path["requests_per_s"] > 0
        assert "added_ms_p50" in case["server_json"]


@pytest.mark.skipif(os.environ.get("BENCH_SMOKE_CLUSTER") != "1", reason="BENCH_SMOKE_CLUSTER")
@pytest.mark.parametrize("suite", ["fleet", "rollback", "footprint"])
def test_cluster_suites_at_tiny_size(tmp_path: Path, suite: str) -> None:
    figures = run(suite, tmp_path)
    assert {"fleet": "median", "rollback": "runs", "footprint": "rows"}[suite] in figures
