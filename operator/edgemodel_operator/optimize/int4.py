"""4-bit weight-only quantization: the aggressive variant, for the smallest file.

Every large float weight of a Conv, Gemm or MatMul is stored as signed 4-bit integers with
float scales and restored by a DequantizeLinear node (opset 21); activations stay float,
so no calibration data is needed. MatMul/Gemm weights get one scale per block of
`BLOCK` values along the reduced axis (onnxruntime fuses such DequantizeLinear + MatMul
into its 4-bit MatMulNBits kernel); Conv weights one scale per output channel, or per
block of input channels where a filter has enough of them.
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
from edgemodel_operator.optimize.int8 import preprocess

OPSET = 21  # DequantizeLinear with int4 and block_size
BLOCK = 32
MIN_ELEMENTS = 128  # smaller weights (biases, the tiniest filters) stay float


def _quantize(weight: npt.NDArray[Any], axis: int, block: int) -> tuple[Any, Any]:
    """Symmetric int4 along blocks of `block` values on `axis` (block 0: per channel of
    axis 0). Returns (int values, scales of the same rank)."""
    w = weight.astype(np.float32)
    if block == 0:
        reduce = tuple(range(1, w.ndim))
        amax = np.abs(w).max(axis=reduce, keepdims=True)
        scale = np.where(amax > 0, amax / 7.0, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale), -8, 7).astype(np.int8)
        return q, scale.reshape(w.shape[0])
    size = w.shape[axis]
    blocks = -(-size // block)
    pad = [(0, 0)] * w.ndim
    pad[axis] = (0, blocks * block - size)
    padded = np.pad(w, pad)
    shape = list(padded.shape)
    shape[axis : axis + 1] = [blocks, block]
    grouped = padded.reshape(shape)
    amax = np.abs(grouped).max(axis=axis + 1, keepdims=True)
    scale = np.where(amax > 0, amax / 7.0, 1.0).astype(np.float32)
    q = np.clip(np.round(grouped / scale), -8, 7).astype(np.int8)
    q = q.reshape(padded.shape)[tuple(slice(0, n) for n in w.shape)]
    return q, np.squeeze(scale, axis=axis + 1)


def _int4_tensor(name: str, values: npt.NDArray[np.int8]) -> TensorProto:
    """Two values per byte, the first in the low nibble (ONNX's packing of INT4)."""
    flat = values.astype(np.uint8).ravel() & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.INT4, values.shape, packed.tobytes(), raw=True)


def _plan(node: onnx.NodeProto) -> tuple[int, int, int] | None:
    """(input index of the weight, blocked axis, block size; 0 = per channel) or None."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MatMul":
        return 1, 0, BLOCK  # a 2-D [K, N] weight (checked by the caller)
    if node.op_type == "Gemm":
        return 1, 1 if attrs.get("transB", 0) else 0, BLOCK
    if node.op_type == "Conv":
        return 1, 1, 0  # axis 1 used only when blocking input channels (see below)
    return None


def quantize_weights(model: onnx.ModelProto) -> int:
    """Rewrite the model in place; return the number of weights stored in 4 bits."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    new_nodes: list[onnx.NodeProto] = []
    done = 0
    for node in graph.node:
        plan = _plan(node)
        weight = None
        if plan is not None and len(node.input) > plan[0]:
            init = inits.get(node.input[plan[0]])
            if init is not None and users.get(init.name) == 1:
                array = numpy_helper.to_array(init)
                rank_ok = array.ndim == 2 if node.op_type != "Conv" else array.ndim >= 3
                if array.dtype == np.float32 and array.size >= MIN_ELEMENTS and rank_ok:
                    weight = (init, array)
        if plan is None or weight is None:
            new_nodes.append(node)
            continue
        init, array = weight
        _, axis, block = plan
        if node.op_type == "Conv" and array.shape[1] >= 4 * BLOCK:
            block = BLOCK  # enough input channels per filter: block them
        q, scale = _quantize(array, axis, block)
        qname, sname = f"{init.name}_int4", f"{init.name}_int4_scale"
        graph.initializer.remove(init)
        graph.initializer.extend([_int4_tensor(qname, q), numpy_helper.from_array(scale, sname)])
        dequantize = helper.make_node(
            "DequantizeLinear", [qname, sname], [init.name], f"{init.name}_dequantize"
        )
        dequantize.attribute.append(helper.make_attribute("axis", axis if block else 0))
        if block:
            dequantize.attribute.append(helper.make_attribute("block_size", block))
        new_nodes.append(dequantize)
        new_nodes.append(node)
        done += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done


def quantize(source: Path, dest: Path) -> Path:
    """Write the 4-bit weight-only model to `dest` and return it."""
    with tempfile.TemporaryDirectory(prefix="int4-") as work:
        prepared = preprocess(source, Path(work) / "prepared.onnx", min_opset=OPSET)
        model = onnx.load(str(prepared))
        count = quantize_weights(model)
        if count == 0:
            raise OptimizeError(
                f"{source.name} has no Conv, Gemm or MatMul weight of {MIN_ELEMENTS}+ values "
                "to store in 4 bits"
            )
        try:
            onnx.checker.check_model(model)
        except Exception as err:
            raise OptimizeError(f"4-bit quantization of {source.name} failed: {err}") from err
        onnx.save(model, str(dest))
    return dest
