"""The `optimize` suite: every real model x every variant, with its task metric.

Models: the digits MLP (tests/models/digits.py), PP-OCRv4 mobile text detection and
recognition and the PP-OCR direction classifier (rapidocr_onnxruntime), Silero VAD v5
(silero-vad); data made here with ground truth (tests/models/ocr.py, vad.py). Variants:
fp32, fp16, int8 (static per-channel QDQ, the cpu recipe, calibrated on rows that are
never scored) and int4 (4-bit weight-only). Per variant: file bytes, batch-1 latency on
onnxruntime's CPU provider with its default threads (variants measured in alternating
rounds), the task metric and its drop vs fp32, and the gate's verdict with the default
thresholds. The goals of issue 13 are checked per row and the reason is given where one
is missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from common import ROOT, log, pct, rounded

sys.path.insert(0, str(ROOT / "tests" / "models"))

import digits
import edge_models
import ocr
import vad

from edgemodel_operator.optimize import Samples, Thresholds, gate, optimize

VARIANTS = ("fp32", "fp16", "int8", "int4")
INT8_GOAL = {"smaller_x": 3.5, "faster_x": 2.0, "max_drop": 0.01}
INT4_GOAL = {"smaller_pct": 85.0, "max_drop": 0.01}
SIZES = {
    "tiny": {"det": (2, 2), "rec": (4, 6), "cls": (4, 6), "vad": (1, 1), "runs": 10, "rounds": 2},
    "full": {"det": (16, 40), "rec": (32, 200), "cls": (32, 200), "vad": (3, 8), "runs": 60,
             "rounds": 5},
}  # fmt: skip


@dataclass
class Case:
    """One model: its file, calibration and evaluation rows, and its task metric."""

    name: str
    model: Path
    source: str
    license: str
    metric: str  # name of the task metric
    higher_is_better: bool
    calibration: Samples
    evaluation: Samples  # rows the gate scores
    score: Callable[[ort.InferenceSession], dict[str, float]]  # task metric (+ extras)
    note: str = ""


def int8_instructions() -> dict[str, Any]:
    """The CPU's int8 dot-product support, from /proc/cpuinfo's flags."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2", "asimddp", "i8mm")
    found = [f for f in wanted if f in flags]
    dot = any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"))
    return {"flags": found, "int8_dot_product": dot}


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _digits() -> Case:
    model = digits.build()
    x, y = model.load_samples()
    labelled = Samples.of(x, y)
    calibration, evaluation = labelled.split(100)

    def score(s: ort.InferenceSession) -> dict[str, float]:
        labels = s.run(["label"], {"input": evaluation.x})[0]
        return {"accuracy": float(np.mean(labels == evaluation.y))}

    return Case("digits", model.model, "tests/models/make_digits.py (scikit-learn digits)",
                "project's own", "accuracy", True, calibration, evaluation, score,
                "a 20 kB MLP: the unit-test model")  # fmt: skip


def _ocr(kind: str, size: dict[str, Any]) -> Case:
    models = edge_models.ocr_models()
    n_cal, n_eval = size[kind]
    chars = ocr.characters(models["rec"]) if kind == "rec" else []
    if kind == "det":
        cal_pages, pages = ocr.make_pages(n_cal, seed=101), ocr.make_pages(n_eval, seed=202)
        calibration = Samples({"x": np.stack([p.x for p in cal_pages])})
        evaluation = Samples({"x": np.stack([p.x for p in pages])})

        def score(s: ort.InferenceSession) -> dict[str, float]:
            maps = [s.run(None, {"x": p.x[None]})[0] for p in pages]
            return ocr.detection_scores(pages, maps)

        return Case("ocr-det", models["det"], "PP-OCRv4 mobile det (rapidocr_onnxruntime 1.4.4)",
                    edge_models.RAPIDOCR.license, "f1", True, calibration, evaluation, score,
                    f"{n_eval} pages {ocr.PAGE[1]}x{ocr.PAGE[0]}, box IoU >= 0.5")  # fmt: skip
    shape = ocr.REC_SHAPE if kind == "rec" else ocr.CLS_SHAPE
    cal_lines = ocr.make_lines(n_cal, seed=303, shape=shape)
    lines = ocr.make_lines(n_eval, seed=404, shape=shape)
    calibration = Samples({"x": np.stack([line.x for line in cal_lines])})
    evaluation = Samples({"x": np.stack([line.x for line in lines])})
    if kind == "rec":

        def score(s: ort.InferenceSession) -> dict[str, float]:
            decoded = [ocr.ctc_decode(s.run(None, {"x": line.x[None]})[0][0], chars)
                       for line in lines]  # fmt: skip
            return {"cer": ocr.character_error_rate([line.text for line in lines], decoded)}

        return Case("ocr-rec", models["rec"], "PP-OCRv4 mobile rec (rapidocr_onnxruntime 1.4.4)",
                    edge_models.RAPIDOCR.license, "cer", False, calibration, evaluation, score,
                    f"{n_eval} rendered text lines 320x48, CTC greedy decoding")  # fmt: skip

    def score_cls(s: ort.InferenceSession) -> dict[str, float]:
        said = [int(s.run(None, {"x": line.x[None]})[0].argmax()) for line in lines]
        right = [p == line.flipped for p, line in zip(said, lines, strict=True)]
        return {"accuracy": float(np.mean(right))}

    return Case("ocr-cls", models["cls"], "PP-OCR mobile v2.0 cls (rapidocr_onnxruntime 1.4.4)",
                edge_models.RAPIDOCR.license, "accuracy", True, calibration, evaluation,
                score_cls, f"{n_eval} lines 192x48, half turned by 180 degrees")  # fmt: skip


def _vad(size: dict[str, Any]) -> Case:
    model = edge_models.vad_model()
    fp32 = _session(model)
    n_cal, n_eval = size["vad"]
    cal_clips, clips = vad.make_clips(n_cal, seed=505), vad.make_clips(n_eval, seed=606)
    calibration = Samples(vad.teacher_rows(fp32, cal_clips, every=2))
    evaluation = Samples(vad.teacher_rows(fp32, clips, every=4))

    def score(s: ort.InferenceSession) -> dict[str, float]:
        return {"f1": vad.clips_f1(s, clips)}

    seconds = sum(len(c.audio) for c in clips) / vad.RATE
    return Case("silero-vad", model, "Silero VAD v5 16 kHz op15 (silero-vad 6.2.3)",
                edge_models.SILERO.license, "f1", True, calibration, evaluation, score,
                f"{n_eval} clips, {seconds:.0f} s of espeak-ng speech in noise at 10 dB SNR, "
                "frame F1 at 0.5")  # fmt: skip


def _latencies(sessions: dict[str, ort.InferenceSession], feed: dict[str, Any], runs: int,
               rounds: int) -> dict[str, list[float]]:  # fmt: skip
    """Batch-1 latency of each variant, measured in alternating rounds."""
    out: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, feed)
    for _ in range(rounds):
        for name, s in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                out[name].append((time.perf_counter() - t0) * 1000.0)
    return out


def _openvino(paths: dict[str, Path], feed: dict[str, Any], n: dict[str, Any],
              work: Path) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Latency of each variant on OpenVINO's execution provider (CPU device), what the npu
    profile's images run, measured in OpenVINO's own venv; {} with BENCH_OPENVINO=0."""
    if os.environ.get("BENCH_OPENVINO", "1") == "0":
        return {}
    from openvino_env import ensure

    try:
        python = ensure()
    except RuntimeError as err:
        return {name: {"error": str(err)} for name in paths}
    work.mkdir(parents=True, exist_ok=True)
    feed_file = work / "feed.npz"
    np.savez(feed_file, **feed)
    argv = [str(python), str(Path(__file__).resolve().parent / "ov_latency.py"), str(feed_file),
            str(n["rounds"]), str(n["runs"]), *(f"{k}={v}" for k, v in paths.items())]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        error = proc.stderr.strip().replace(str(work), "<work>")[-300:]
        return {name: {"error": error} for name in paths}
    result: dict[str, dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    for figures in result.values():
        if "error" in figures:
            figures["error"] = figures["error"].replace(str(work), "<work>")
    return result


def _goals(case: Case, name: str, row: dict[str, Any], dot: bool) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    if name == "int8":
        checks["smaller"] = row["smaller_x"] >= INT8_GOAL["smaller_x"]
        checks["faster"] = row["faster_x"] >= INT8_GOAL["faster_x"] if dot else None
        checks["drop"] = row["metric_drop"] <= INT8_GOAL["max_drop"]
    elif name == "int4":
        checks["smaller"] = row["smaller_pct"] >= INT4_GOAL["smaller_pct"]
        checks["drop"] = row["metric_drop"] <= INT4_GOAL["max_drop"]
    else:
        return {}
    missed = [k for k, v in checks.items() if v is False]
    return {"checks": checks, "reached": not missed, "missed": missed}


def suite_optimize(size: str, work: Path) -> dict[str, Any]:
    n = SIZES[size]
    cpu = int8_instructions()
    cases = [_digits(), _ocr("det", n), _ocr("rec", n), _ocr("cls", n), _vad(n)]
    results: dict[str, Any] = {}
    for case in cases:
        log(f"optimize: {case.name}")
        made: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in VARIANTS:
            try:
                made[name] = optimize(case.model, name, work / case.name / name,
                                      case.calibration, accelerator="cpu")  # fmt: skip
                _session(made[name].path)  # it must load
            except Exception as err:  # a variant that cannot be made is a result, not a crash
                traceback.print_exc()
                first = str(err).replace(str(work), "<work>").splitlines()[0][:300]
                errors[name] = f"{type(err).__name__}: {first}"
                made.pop(name, None)
        sessions = {k: _session(v.path) for k, v in made.items()}
        feed, _ = next(iter(case.evaluation.head(1).batches(sessions["fp32"].get_inputs(), 1)))
        times = _latencies(sessions, feed, n["runs"], n["rounds"])
        openvino = _openvino({k: v.path for k, v in made.items()}, feed, n, work / case.name)
        rows: dict[str, Any] = {}
        base_metric = None
        for name in VARIANTS:
            if name in errors:
                rows[name] = {"error": errors[name]}
                continue
            variant = made[name]
            task = case.score(sessions[name])
            value = task[case.metric]
            base_metric = value if name == "fp32" else base_metric
            row: dict[str, Any] = {
                "method": variant.method,
                "bytes": variant.size_bytes,
                "ms_p50": rounded(pct(times[name], 50), 4),
                "ms_p99": rounded(pct(times[name], 99), 4),
                "metric": rounded(value, 4),
                "task": {k: rounded(v, 4) for k, v in task.items()},
            }
            ov = openvino.get(name)
            if ov is not None:
                row["openvino"] = ov
            if name != "fp32":
                result = gate.evaluate(case.model, variant.path, case.evaluation, name)
                verdict = gate.check(result, Thresholds())
                row["gate"] = {**result.to_status(), "passed": verdict.passed}
            rows[name] = row
        base = rows["fp32"]
        for name, row in rows.items():
            if "error" in row:
                continue
            row["smaller_x"] = rounded(base["bytes"] / row["bytes"], 2)
            row["smaller_pct"] = rounded(100 * (1 - row["bytes"] / base["bytes"]), 1)
            row["faster_x"] = rounded(base["ms_p50"] / row["ms_p50"], 2)
            ov, ov_base = row.get("openvino", {}), base.get("openvino", {})
            if "ms_p50" in ov and "ms_p50" in ov_base:
                ov["faster_x"] = rounded(ov_base["ms_p50"] / ov["ms_p50"], 2)
            diff = row["metric"] - base["metric"]
            row["metric_drop"] = rounded(-diff if case.higher_is_better else diff, 4)
            row["goals"] = _goals(case, name, row, cpu["int8_dot_product"])
        results[case.name] = {
            "source": case.source,
            "license": case.license,
            "metric": case.metric,
            "higher_is_better": case.higher_is_better,
            "data": case.note,
            "calibration_rows": len(case.calibration),
            "gate_rows": len(case.evaluation),
            "variants": rows,
        }
        log(f"optimize: {case.name}: " + ", ".join(
            f"{k} {v.get('bytes', '-')}B {v.get('ms_p50', '-')}ms {case.metric} "
            f"{v.get('metric', v.get('error'))}" for k, v in rows.items()))  # fmt: skip
    return {
        "provider": "CPUExecutionProvider, onnxruntime's default threads (one per core)",
        "openvino": "OpenVINOExecutionProvider (onnxruntime-openvino 1.24.1, device CPU, its own "
        "venv), the npu profile's provider measured on this x86 CPU; same rounds",
        "latency": f"batch 1, {n['rounds']} alternating rounds x {n['runs']} runs per variant",
        "cpu_int8": cpu,
        "goals": {"int8": INT8_GOAL, "int4": INT4_GOAL},
        "models": results,
    }
