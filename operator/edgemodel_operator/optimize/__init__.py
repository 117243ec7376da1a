"""Per-accelerator model variants (fp32 as is, fp16, int8, int4), file in, file out, and
the gate that checks a variant still answers like the original.

Pure model transformations with onnx, onnxruntime and onnxconverter-common; nothing here
talks to Kubernetes, a registry or the network (the download is adapters.fetch).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgemodel_operator.optimize import fp16, gate, int4, int8, measure
from edgemodel_operator.optimize.digest import sha256_file
from edgemodel_operator.optimize.errors import OptimizeError
from edgemodel_operator.optimize.gate import Thresholds, Verdict
from edgemodel_operator.optimize.samples import Samples, load_samples, save_samples

PRECISIONS = ("fp32", "fp16", "int8", "int4")
Method = Literal["copy", "float16", "int8-dynamic", "int8-static-qdq", "int4-weight-only"]
# The execution provider each accelerator's image runs first (images/server/providers.py).
PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "gpu": ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
    "npu": ("OpenVINOExecutionProvider",),
}

__all__ = [
    "PRECISIONS",
    "Assessment",
    "OptimizeError",
    "Samples",
    "Thresholds",
    "Variant",
    "assess",
    "load_samples",
    "optimize",
    "save_samples",
]


@dataclass(frozen=True)
class Variant:
    """One optimized model file and how it was made."""

    precision: str
    method: Method
    path: Path
    sha256: str
    size_bytes: int


def optimize(
    source: Path,
    precision: str,
    out_dir: Path,
    samples: Samples | None = None,
    *,
    accelerator: str = "cpu",
    int8_mode: Literal["auto", "dynamic", "static"] = "auto",
) -> Variant:
    """Make the `precision` variant of the ONNX model `source` in `out_dir`.

    fp32 copies the file; fp16 converts weights and compute to float16 (inputs and outputs
    stay float32); int8 quantizes statically (QDQ, per-channel weights, calibrated on
    `samples`, activations as `accelerator`'s provider wants them) when samples are given,
    dynamically otherwise; `int8_mode` forces one; int4 stores Conv/Gemm/MatMul weights in
    4 bits (weight-only, no samples needed). The file appears under its final name only
    when complete, as out_dir/model-<precision>.onnx.
    """
    if precision not in PRECISIONS:
        raise OptimizeError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if not source.is_file():
        raise OptimizeError(f"no model file at {source}")
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"model-{precision}.onnx"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}-", suffix=".onnx", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    method: Method
    try:
        if precision == "fp32":
            shutil.copyfile(source, tmp)
            method = "copy"
        elif precision == "fp16":
            fp16.convert(source, tmp)
            method = "float16"
        elif precision == "int4":
            int4.quantize(source, tmp)
            method = "int4-weight-only"
        else:
            static = int8_mode == "static" or (int8_mode == "auto" and samples is not None)
            if static:
                if samples is None:
                    raise OptimizeError("static int8 quantization needs calibration samples")
                int8.quantize_static(source, tmp, samples, accelerator)
                method = "int8-static-qdq"
            else:
                int8.quantize_dynamic(source, tmp)
                method = "int8-dynamic"
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return Variant(
        precision=precision,
        method=method,
        path=dest,
        sha256=sha256_file(dest),
        size_bytes=dest.stat().st_size,
    )


@dataclass(frozen=True)
class Assessment:
    """What status.images[] shows about a variant: size, latency, and the gate's verdict."""

    verdict: Verdict | None  # None when there were no evaluation samples
    figures: dict[str, Any]


def assess(
    source: Path,
    variant: Variant,
    evaluation: Samples | None,
    limits: Thresholds,
    accelerator: str,
    latency_runs: int = 30,
) -> Assessment:
    """Gate `variant` against the fp32 `source` on `evaluation` and measure both at batch 1
    on the accelerator's provider when this onnxruntime build has it, on CPU otherwise."""
    fp32_bytes = source.stat().st_size
    figures: dict[str, Any] = {
        "method": variant.method,
        "modelBytes": variant.size_bytes,
        "fp32ModelBytes": fp32_bytes,
        "sizeVsFp32": round(variant.size_bytes / fp32_bytes, 4),
    }
    verdict = None
    if evaluation is not None:
        available = measure.available_providers()
        wanted = [p for p in PROVIDERS.get(accelerator, ()) if p in available]
        providers = tuple(dict.fromkeys([*wanted, *measure.CPU]))
        mine = measure.latency(variant.path, evaluation, latency_runs, providers=providers)
        base = measure.latency(source, evaluation, latency_runs, providers=providers)
        figures["latency"] = {
            "provider": mine.provider,
            "batch": 1,
            "p50Ms": round(mine.p50_ms, 4),
            "p99Ms": round(mine.p99_ms, 4),
            "fp32P50Ms": round(base.p50_ms, 4),
            "speedupVsFp32": round(base.p50_ms / mine.p50_ms, 3) if mine.p50_ms else None,
        }
        if variant.precision != "fp32":
            result = gate.evaluate(source, variant.path, evaluation, variant.precision, limits)
            verdict = gate.check(result, limits)
            figures["validation"] = {**result.to_status(), "passed": verdict.passed}
    return Assessment(verdict, figures)
