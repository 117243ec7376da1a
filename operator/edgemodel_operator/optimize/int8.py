"""int8 quantization with onnxruntime.quantization.

- dynamic: weights stored as int8, activations quantized on the fly; needs no data.
- static (QDQ): weights and activations int8, activation ranges calibrated on samples;
  the QuantizeLinear/DequantizeLinear format runs on every onnxruntime provider and is
  what TensorRT and OpenVINO consume.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime import quantization
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgemodel_operator.optimize.errors import OptimizeError
from edgemodel_operator.optimize.samples import Samples

CALIBRATION_ROWS = 256
BATCH_ROWS = 32


class SampleReader:
    """Calibration data for onnxruntime (its CalibrationDataReader protocol: get_next)."""

    def __init__(self, input_name: str, batches: list[npt.NDArray[Any]]) -> None:
        self.input_name = input_name
        self._batches = batches
        self._iter: Iterator[npt.NDArray[Any]] = iter(batches)

    def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)

    @classmethod
    def for_model(cls, model: Path, samples: Samples, rows: int = CALIBRATION_ROWS) -> SampleReader:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise OptimizeError(
                f"calibration supports models with one input; {model.name} has {len(inputs)}"
            )
        first = inputs[0]
        dtype = np.float16 if first.type == "tensor(float16)" else np.float32
        x = samples.x[:rows].astype(dtype)
        batch_dim = first.shape[0] if first.shape else None
        if isinstance(batch_dim, int) and batch_dim > 0:  # fixed batch: whole batches only
            batches = [x[i : i + batch_dim] for i in range(0, len(x) - batch_dim + 1, batch_dim)]
        else:
            batches = [x[i : i + BATCH_ROWS] for i in range(0, len(x), BATCH_ROWS)]
        if not batches:
            raise OptimizeError(f"{model.name} needs batches of {batch_dim} samples to calibrate")
        return cls(str(first.name), batches)


def preprocess(source: Path, dest: Path) -> Path:
    """onnxruntime's recommended step before quantizing: basic graph optimizations (fusing
    MatMul+Add into Gemm, dropping no-op Casts, folding constants) and shape inference.
    Symbolic shape inference is skipped (it would need sympy)."""
    try:
        quant_pre_process(source, dest, skip_symbolic_shape=True)
    except Exception as err:
        raise OptimizeError(f"pre-processing {source.name} for quantization failed: {err}") from err
    return dest


def quantize_dynamic(source: Path, dest: Path) -> Path:
    """Write the dynamically quantized model (int8 weights) to `dest` and return it."""
    with tempfile.TemporaryDirectory(prefix="int8-") as work:
        prepared = preprocess(source, Path(work) / "prepared.onnx")
        try:
            quantization.quantize_dynamic(prepared, dest, weight_type=quantization.QuantType.QInt8)
        except Exception as err:  # onnxruntime's quantizer raises assorted error types
            raise OptimizeError(
                f"dynamic int8 quantization of {source.name} failed: {err}"
            ) from err
    return dest


def quantize_static(source: Path, dest: Path, samples: Samples) -> Path:
    """Write the statically quantized QDQ model (calibrated on `samples`) to `dest`."""
    with tempfile.TemporaryDirectory(prefix="int8-") as work:
        prepared = preprocess(source, Path(work) / "prepared.onnx")
        _quantize_static(source.name, prepared, dest, samples)
    return dest


def _quantize_static(name: str, prepared: Path, dest: Path, samples: Samples) -> None:
    reader = SampleReader.for_model(prepared, samples)
    try:
        quantization.quantize_static(
            prepared,
            dest,
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=False,  # per-tensor scales (per-channel trips an onnxruntime bug on Gemm)
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
    except Exception as err:
        raise OptimizeError(f"static int8 quantization of {name} failed: {err}") from err
