"""4-bit weight-only quantization: the aggressive variant, for the smallest file.

Every large float weight of a Conv, Gemm, MatMul or recurrent node (LSTM/GRU/RNN, also
inside If branches) is stored as signed 4-bit integers with
float scales and restored by a DequantizeLinear node (opset 21); activations stay float,
so no calibration data is needed. MatMul/Gemm weights get one scale per block of
`BLOCK` values along the reduced axis (onnxruntime fuses such DequantizeLinear + MatMul
into its 4-bit MatMulNBits kernel), recurrent weights per block of inputs; Conv weights
one scale per output channel, or per block of input channels where a filter has enough.
The same pass in 8 bits stores what static int8 QDQ cannot reach (weights in subgraphs).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgemodel_operator.optimize.errors import OptimizeError
from edgemodel_operator.optimize.prepare import all_graphs, dedupe_initializers, preprocess

OPSET = 21  # DequantizeLinear with int4 and block_size
BLOCK = 32
MIN_ELEMENTS = 128  # smaller weights (biases, the tiniest filters) stay float


def _quantize(weight: npt.NDArray[Any], axis: int, block: int, bits: int) -> tuple[Any, Any]:
    """Symmetric `bits`-bit integers along blocks of `block` values on `axis`, or with one
    scale per channel of `axis` (block 0). Returns (int values, scales)."""
    top = float(2 ** (bits - 1) - 1)
    w = weight.astype(np.float32)
    if block == 0:
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=reduce, keepdims=True)
        scale = np.where(amax > 0, amax / top, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale), -top - 1, top).astype(np.int8)
        return q, scale.reshape(w.shape[axis])
    size = w.shape[axis]
    blocks = -(-size // block)
    pad = [(0, 0)] * w.ndim
    pad[axis] = (0, blocks * block - size)
    padded = np.pad(w, pad)
    shape = list(padded.shape)
    shape[axis : axis + 1] = [blocks, block]
    grouped = padded.reshape(shape)
    amax = np.abs(grouped).max(axis=axis + 1, keepdims=True)
    scale = np.where(amax > 0, amax / top, 1.0).astype(np.float32)
    q = np.clip(np.round(grouped / scale), -top - 1, top).astype(np.int8)
    q = q.reshape(padded.shape)[tuple(slice(0, n) for n in w.shape)]
    return q, np.squeeze(scale, axis=axis + 1)


def _int_tensor(name: str, values: npt.NDArray[np.int8], bits: int) -> TensorProto:
    """INT8 as is; INT4 two values per byte, the first in the low nibble (ONNX's packing)."""
    if bits == 8:
        return numpy_helper.from_array(values, name)
    flat = values.astype(np.uint8).ravel() & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.INT4, values.shape, packed.tobytes(), raw=True)


def _plans(node: onnx.NodeProto) -> list[tuple[int, int, int, int]]:
    """Per weight: (input index, rank, the reduced axis to block, the output-channel axis)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MatMul":
        return [(1, 2, 0, 1)]  # [K, N]
    if node.op_type == "Gemm":
        return [(1, 2, 1, 0) if attrs.get("transB", 0) else (1, 2, 0, 1)]
    if node.op_type == "Conv":
        return [(1, r, 1, 0) for r in (3, 4, 5)]  # [out, in / groups, kernel...]
    if node.op_type in ("LSTM", "GRU", "RNN"):
        return [(1, 3, 2, 1), (2, 3, 2, 1)]  # W, R: [directions, gates * hidden, in]
    return []


def quantize_weights(model: onnx.ModelProto, bits: int = 4, subgraphs_only: bool = False) -> int:
    """Store the large float weights of Conv, Gemm, MatMul and recurrent nodes, in every
    graph and subgraph, as `bits`-bit integers with a DequantizeLinear; weights already
    quantized (int8 QDQ) are left alone. Rewrites in place, returns how many it stored."""
    done = 0
    users: dict[str, int] = {}
    for g in all_graphs(model.graph):
        for node in g.node:
            for name in node.input:
                users[name] = users.get(name, 0) + 1
    # Innermost graphs first: rewriting a graph's node list copies its nodes, subgraphs
    # included, so a subgraph changed after its parent would be changed in a lost copy.
    graphs = all_graphs(model.graph)
    for graph in reversed(graphs[1:] if subgraphs_only else graphs):
        inits = {init.name: init for init in graph.initializer}
        new_nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            for index, rank, reduced, channels in _plans(node):
                if len(node.input) <= index or node.input[index] not in inits:
                    continue
                init = inits[node.input[index]]
                array = numpy_helper.to_array(init)
                if (array.dtype != np.float32 or array.ndim != rank
                        or array.size < MIN_ELEMENTS or users.get(init.name) != 1):  # fmt: skip
                    continue
                # 4 bits: blocks along the reduced axis (opset 21), except for filters with
                # few input channels; 8 bits: one scale per output channel (opset 13).
                blocked = bits == 4 and (node.op_type != "Conv" or array.shape[1] >= 4 * BLOCK)
                axis, block = (reduced, BLOCK) if blocked else (channels, 0)
                q, scale = _quantize(array, axis, block, bits)
                qname, sname = f"{init.name}_int{bits}", f"{init.name}_int{bits}_scale"
                graph.initializer.remove(init)
                del inits[init.name]
                graph.initializer.extend(
                    [_int_tensor(qname, q, bits), numpy_helper.from_array(scale, sname)]
                )
                dequantize = helper.make_node(
                    "DequantizeLinear", [qname, sname], [init.name], f"{init.name}_dequantize"
                )
                dequantize.attribute.append(helper.make_attribute("axis", axis))
                if block:
                    dequantize.attribute.append(helper.make_attribute("block_size", block))
                new_nodes.append(dequantize)
                done += 1
            new_nodes.append(node)
        del graph.node[:]
        graph.node.extend(new_nodes)
    return done


def quantize(source: Path, dest: Path) -> Path:
    """Write the 4-bit weight-only model to `dest` and return it."""
    with tempfile.TemporaryDirectory(prefix="int4-") as work:
        prepared = preprocess(source, Path(work) / "prepared.onnx", min_opset=OPSET)
        model = onnx.load(str(prepared))
        count = quantize_weights(model, bits=4)
        if count == 0:
            raise OptimizeError(
                f"{source.name} has no Conv, Gemm or MatMul weight of {MIN_ELEMENTS}+ values "
                "to store in 4 bits"
            )
        dedupe_initializers(model)
        try:
            onnx.checker.check_model(model)
        except Exception as err:
            raise OptimizeError(f"4-bit quantization of {source.name} failed: {err}") from err
        onnx.save(model, str(dest))
    return dest
