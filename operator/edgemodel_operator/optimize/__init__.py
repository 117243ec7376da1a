"""Per-accelerator model variants: fp32 (as is), fp16 and int8, file in, file out.

Pure model transformations with onnx, onnxruntime and onnxconverter-common; nothing here
talks to Kubernetes, a registry or the network (the download is adapters.fetch).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgemodel_operator.optimize import fp16, int8
from edgemodel_operator.optimize.digest import sha256_file
from edgemodel_operator.optimize.errors import OptimizeError
from edgemodel_operator.optimize.samples import Samples, load_samples

PRECISIONS = ("fp32", "fp16", "int8")
Method = Literal["copy", "float16", "int8-dynamic", "int8-static-qdq"]

__all__ = [
    "PRECISIONS",
    "OptimizeError",
    "Samples",
    "Variant",
    "load_samples",
    "optimize",
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
    int8_mode: Literal["auto", "dynamic", "static"] = "auto",
) -> Variant:
    """Make the `precision` variant of the ONNX model `source` in `out_dir`.

    fp32 copies the file; fp16 converts weights and compute to float16 (inputs and outputs
    stay float32); int8 quantizes statically (QDQ, calibrated on `samples`) when samples
    are given, dynamically otherwise; `int8_mode` forces one. The file appears under its
    final name only when complete, as out_dir/model-<precision>.onnx.
    """
    if precision not in PRECISIONS:
        raise OptimizeError(f"unknown precision {precision!r}; expected fp32, fp16 or int8")
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
        else:
            static = int8_mode == "static" or (int8_mode == "auto" and samples is not None)
            if static:
                if samples is None:
                    raise OptimizeError("static int8 quantization needs calibration samples")
                int8.quantize_static(source, tmp, samples)
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
