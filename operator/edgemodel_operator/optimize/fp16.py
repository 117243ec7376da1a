"""float32 -> float16 conversion that keeps the model's inputs and outputs in float32.

Clients and the accuracy gate keep sending float32; the converted graph casts at its
edges. Operators that lose too much in float16 stay in float32 (onnxconverter-common's
block list).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
from onnxconverter_common import float16

from edgemodel_operator.optimize.errors import OptimizeError


def drop_noop_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove Cast nodes whose input already has the target type (returns a copy).

    Exporters such as skl2onnx start graphs with Cast(float -> float). onnxconverter-common
    pairs such a Cast with the float16 cast it inserts at the input and removes both,
    leaving a float32 input wired to float16 operators; without the no-op Cast it works.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    elem_types = {
        value.name: value.type.tensor_type.elem_type
        for value in [*graph.input, *graph.value_info, *graph.output]
        if value.type.HasField("tensor_type")
    }
    elem_types.update({init.name: init.data_type for init in graph.initializer})
    outputs = {value.name for value in graph.output}
    result = onnx.ModelProto()
    result.CopyFrom(model)
    renames: dict[str, str] = {}
    kept: list[onnx.NodeProto] = []
    for node in result.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        target = next((a.i for a in node.attribute if a.name == "to"), None)
        if (
            node.op_type == "Cast"
            and node.domain in ("", "ai.onnx")
            and target is not None
            and elem_types.get(node.input[0]) == target
            and node.output[0] not in outputs
        ):
            renames[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    del result.graph.node[:]
    result.graph.node.extend(kept)
    return result


def convert(source: Path, dest: Path) -> Path:
    """Write the float16 version of `source` to `dest` and return `dest`."""
    model = drop_noop_casts(onnx.load(str(source)))
    try:
        with warnings.catch_warnings():
            # Tiny weights flushed to float16's range are expected, not news.
            warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
            converted: onnx.ModelProto = float16.convert_float_to_float16(model, keep_io_types=True)
    except Exception as err:  # the converter raises plain Exceptions and ValueErrors
        raise OptimizeError(f"float16 conversion of {source.name} failed: {err}") from err
    onnx.save(converted, str(dest))
    return dest
