"""Bring a model into the shape the quantizers need.

Exporters such as paddle2onnx store weights as Constant nodes and target old opsets
(PP-OCR: opset 11 and 12). onnxruntime's quantizer only quantizes initializers, and
per-channel QDQ needs opset >= 13 (QuantizeLinear's axis), int4 needs opset 21.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
from onnx import numpy_helper, version_converter
from onnxruntime.quantization.shape_inference import quant_pre_process

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


def all_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """The graph and every subgraph in it (If / Loop / Scan bodies), parents first."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += all_graphs(attr.g)
            for sub in attr.graphs:
                found += all_graphs(sub)
    return found


def dedupe_initializers(model: onnx.ModelProto) -> int:
    """Keep one copy of initializers that are equal byte for byte, in the top graph, where
    every subgraph sees it; return how many copies went. onnxruntime's pre-processing folds
    weights used by both branches of an If into each branch (Silero VAD's LSTM twice)."""
    graphs = all_graphs(model.graph)
    top_names = {init.name for init in model.graph.initializer}
    kept: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    renames: dict[str, str] = {}
    for graph in graphs:
        for init in list(graph.initializer):
            if len(init.raw_data) < 1024:
                continue  # not worth it, and small constants are often shape values
            key = (init.data_type, tuple(init.dims), init.raw_data)
            if key in kept:
                renames[init.name] = kept[key]
                graph.initializer.remove(init)
                continue
            kept[key] = init.name
            if graph is not model.graph and init.name not in top_names:
                model.graph.initializer.append(init)
                graph.initializer.remove(init)
                top_names.add(init.name)
    for graph in graphs:
        for node in graph.node:
            node.input[:] = [renames.get(name, name) for name in node.input]
    return len(renames)


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


def preprocess(source: Path, dest: Path, min_opset: int = MIN_OPSET) -> Path:
    """Weights as initializers at opset >= 13, then onnxruntime's recommended step before
    quantizing: graph optimizations (Conv+BatchNormalization, MatMul+Add into Gemm,
    constant folding) and shape inference (symbolic inference skipped: it needs sympy)."""
    with tempfile.TemporaryDirectory(prefix="prep-") as work:
        ready = prepare(source, Path(work) / "ready.onnx", min_opset)
        try:
            quant_pre_process(ready, dest, skip_symbolic_shape=True)
        except Exception as err:
            raise OptimizeError(
                f"pre-processing {source.name} for quantization failed: {err}"
            ) from err
    return dest
