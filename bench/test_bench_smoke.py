"""Smoke test of the benchmark runner: the suites that need no cluster, at size tiny.

Takes about half a minute (the optimize suite quantizes the real models on a few rows).
The cluster suites (fleet, rollback, footprint, ota) start a cluster of
their own and take about a minute each at size tiny; set BENCH_SMOKE_CLUSTER=1 to run them
too (they need the binaries of hack/build-tools.sh and free ports 18443..18480)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RUN = Path(__file__).resolve().parent / "run.py"
MACHINE_KEYS = {"cpu_model", "cores", "ram_gib", "kernel", "python", "versions"}


def run(suite: str, out: Path) -> dict[str, Any]:
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
    figures: dict[str, Any] = doc["figures"]
    return figures


def test_optimize_suite_reports_every_model_and_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_OPENVINO", "0")  # its venv is ~150 MB: make bench builds it
    figures = run("optimize", tmp_path)
    models = figures["models"]
    assert isinstance(models, dict)
    assert set(models) == {"digits", "ocr-det", "ocr-rec", "ocr-cls", "silero-vad"}
    assert figures["cpu_int8"]["flags"] is not None  # type: ignore[index]
    for name, model in models.items():
        variants = model["variants"]
        assert set(variants) == {"fp32", "fp16", "int8", "int4"}, name
        made = {k: v for k, v in variants.items() if "error" not in v}
        assert {"fp32", "int8", "int4"} <= set(made), name
        for key, row in made.items():
            assert row["bytes"] > 0 and row["ms_p50"] > 0 and row["ms_p99"] >= row["ms_p50"]
            assert "metric" in row and "metric_drop" in row, (name, key)
        assert made["int8"]["bytes"] < made["fp32"]["bytes"] / 1.5, name
        assert made["int4"]["bytes"] < made["int8"]["bytes"], name
        assert made["int8"]["gate"]["samples"] == model["gate_rows"], name
        assert set(made["int8"]["goals"]["checks"]) == {"smaller", "faster", "drop"}
    assert "| ocr-rec | int8 (int8-static-qdq) |" in (tmp_path / "summary.md").read_text()


def test_serving_suite_measures_our_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_KSERVE", "0")  # KServe's venv is ~500 MB: make bench builds it
    figures = run("serving", tmp_path)
    results = figures["results"]
    assert isinstance(results, dict) and set(results) == {"edgemodel"}
    assert set(results["edgemodel"]) == {"json_c1", "binary_c1", "json_c8", "binary_c8"}
    for case in results["edgemodel"].values():
        assert case["requests_per_s"] > 0 and 0 < case["ms_p50"] <= case["ms_p99"]
    assert figures["no_collapse"].keys() == {"json", "binary"}  # type: ignore[attr-defined]


@pytest.mark.skipif(os.environ.get("BENCH_SMOKE_CLUSTER") != "1", reason="BENCH_SMOKE_CLUSTER")
@pytest.mark.parametrize("suite", ["fleet", "rollback", "footprint", "ota"])
def test_cluster_suites_at_tiny_size(tmp_path: Path, suite: str) -> None:
    figures = run(suite, tmp_path)
    key = {"fleet": "median", "rollback": "runs", "footprint": "rows",
           "ota": "rollback_after_evidence"}[suite]  # fmt: skip
    assert key in figures


def test_readme_blocks_are_what_the_committed_results_give(tmp_path: Path) -> None:
    """README's generated performance blocks match bench/results/*.json, and a block typed
    by hand is found and put right."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    script = Path(__file__).resolve().parent / "readme.py"
    check = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    text = readme.read_text()
    assert "<!-- bench:optimize:start -->" in text and "<!-- bench:serving:start -->" in text
    edited = tmp_path / "README.md"
    edited.write_text(text.replace("<!-- bench:serving:start -->\n",
                                   "<!-- bench:serving:start -->\n10x faster!\n", 1))  # fmt: skip
    args = [sys.executable, str(script), "--readme", str(edited)]
    assert subprocess.run([*args, "--check"], capture_output=True, timeout=60).returncode == 1
    assert subprocess.run(args, capture_output=True, timeout=60).returncode == 0
    assert edited.read_text() == text
