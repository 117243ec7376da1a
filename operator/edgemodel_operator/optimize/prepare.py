"""Bring a model into the shape the quantizers need.

Exporters such as paddle2onnx store weights as Constant nodes and target old opsets
(PP-OCR: opset 11 and 12). onnxruntime's quantizer only quantizes initializers, and
per-channel QDQ needs opset >= 13 (QuantizeLinear's axis), int4 needs opset 21.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import numpy_helper, version_converter

from edgemodel_operator.optimize.errors import OptimizeError

MIN_OPSET = 13


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Move the tensors of top-level Constant nodes into initializers; return how many."""
    graph = model.graph
    kept: list[onnx.NodeProto] = []
    moved = 0
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and "value" in attrs:
            tensor = numpy_helper.to_array(attrs["value"].t)
            graph.initializer.append(numpy_helper.from_array(tensor, node.output[0]))
            moved += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return moved


def prepare(source: Path, dest: Path, min_opset: int = MIN_OPSET) -> Path:
    """Write `source` with weights as initializers and at least opset `min_opset`."""
    try:
        model = onnx.load(str(source))
        if opset(model) < min_opset:
            model = version_converter.convert_version(model, min_opset)
        constants_to_initializers(model)
        if model.ir_version < 7:
            model.ir_version = 7
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises its own errors, ValueErrors and RuntimeErrors
        raise OptimizeError(f"could not prepare {source.name} for quantization: {err}") from err
    onnx.save(model, str(dest))
    return dest
