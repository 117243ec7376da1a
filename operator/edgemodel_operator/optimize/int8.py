"""int8 quantization with onnxruntime.quantization.

- static (QDQ): weights int8 per output channel, activations int8 with ranges calibrated
  on samples. QuantizeLinear/DequantizeLinear pairs run on every onnxruntime provider;
  the CPU provider fuses them into integer kernels (VNNI / dot-product instructions),
  OpenVINO and TensorRT consume them as they are. The activation type follows the
  provider that will run the variant (`RECIPES`).
- dynamic: weights stored as int8, activations quantized on the fly; needs no data.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime import quantization

from edgemodel_operator.optimize.errors import OptimizeError
from edgemodel_operator.optimize.int4 import quantize_weights
from edgemodel_operator.optimize.prepare import dedupe_initializers, preprocess
from edgemodel_operator.optimize.samples import Feed, Samples

CALIBRATION_ROWS = 256
# Only the weighted operators: quantizing the elementwise ones as well (Add, Mul, Pow,
# Sigmoid, Concat ...) took Silero VAD's output to cosine 0.85 against float32 (frame F1
# 0.95 -> 0.30) and adds requantization steps that cost more than they save on CPU.
OP_TYPES = ("Conv", "MatMul", "Gemm")
# The first weighted operator stays float when it holds less than this share of the
# weights: it reads the raw input (pixels), where int8 costs the most accuracy for the
# least size (PP-OCRv4 detection F1 0.859 -> 0.870 against 0.880 in fp32, for 432 weights).
FIRST_LAYER_SHARE = 0.05


@dataclass(frozen=True)
class Recipe:
    """How an accelerator's execution provider wants its int8 QDQ model."""

    activation: quantization.QuantType
    symmetric_activations: bool
    why: str


RECIPES = {
    "cpu": Recipe(
        quantization.QuantType.QUInt8, False,
        "uint8 activations x int8 weights: the CPU provider's VNNI / dot-product kernels",
    ),
    "npu": Recipe(
        quantization.QuantType.QUInt8, False,
        "QDQ with uint8 activations, which OpenVINO turns into its own int8 graph",
    ),
    "gpu": Recipe(
        quantization.QuantType.QInt8, True,
        "symmetric int8 activations (zero point 0), which TensorRT requires",
    ),
}  # fmt: skip


class SampleReader:
    """Calibration data for onnxruntime (its CalibrationDataReader protocol: get_next)."""

    def __init__(self, feeds: list[Feed]) -> None:
        self._feeds = feeds
        self._iter: Iterator[Feed] = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)

    @classmethod
    def for_model(cls, model: Path, samples: Samples, rows: int = CALIBRATION_ROWS) -> SampleReader:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        feeds = list(samples.head(min(rows, len(samples))).feeds(session.get_inputs()))
        if not feeds:
            raise OptimizeError(f"no calibration batch could be made for {model.name}")
        return cls(feeds)


def _small_first_layer(model: Path) -> list[str]:
    """[name] of the first Conv/MatMul/Gemm if it holds under FIRST_LAYER_SHARE of the
    weights of all of them, else []."""
    graph = onnx.load(str(model)).graph
    sizes = {init.name: int(np.prod(init.dims)) for init in graph.initializer}
    weighted = [n for n in graph.node if n.op_type in OP_TYPES and len(n.input) > 1
                and n.input[1] in sizes]  # fmt: skip
    total = sum(sizes[n.input[1]] for n in weighted)
    if not weighted or not total:
        return []
    first = weighted[0]
    return [first.name] if sizes[first.input[1]] < FIRST_LAYER_SHARE * total else []


def _has_gemm(model: Path) -> bool:
    return any(node.op_type == "Gemm" for node in onnx.load(str(model)).graph.node)


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


def quantize_static(source: Path, dest: Path, samples: Samples, accelerator: str = "cpu") -> Path:
    """Write the statically quantized QDQ model (calibrated on `samples`) to `dest`."""
    recipe = RECIPES.get(accelerator)
    if recipe is None:
        raise OptimizeError(f"no int8 recipe for accelerator {accelerator!r}")
    with tempfile.TemporaryDirectory(prefix="int8-") as work:
        prepared = preprocess(source, Path(work) / "prepared.onnx")
        reader = SampleReader.for_model(prepared, samples)
        keep = _small_first_layer(prepared)
        try:
            quantization.quantize_static(
                prepared,
                dest,
                reader,
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=recipe.activation,
                weight_type=quantization.QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(OP_TYPES),
                nodes_to_exclude=keep,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                extra_options={
                    "ActivationSymmetric": recipe.symmetric_activations,
                    # onnxruntime widens weight scales so that int32 biases do not overflow,
                    # but fails doing so for per-channel Gemm weights; skip it there.
                    "QDQDisableWeightAdjustForInt32Bias": _has_gemm(prepared),
                },
            )
        except Exception as err:
            raise OptimizeError(f"static int8 quantization of {source.name} failed: {err}") from err
        _weights_left_in_subgraphs(dest)
    return dest


def _weights_left_in_subgraphs(path: Path) -> None:
    """QDQ quantization does not enter If/Loop bodies (Silero VAD keeps its LSTM there):
    store the float weights left there as int8 with a DequantizeLinear (weight-only). The
    top graph's float weights were left float on purpose (the small first layer)."""
    model = onnx.load(str(path))
    if quantize_weights(model, bits=8, subgraphs_only=True) + dedupe_initializers(model):
        onnx.save(model, str(path))
