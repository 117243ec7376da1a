"""Bad versions of the digits model, for the gates that must catch them: models with the
digits model's signature (float "input" [N, 64] -> "probabilities" [N, 10]) that load,
pass readiness, and then fail every inference or answer with the wrong shape.

Usage: python broken.py failing|misshaped|unloadable OUT_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "digits-broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def failing_model(path: Path) -> Path:
    """Reads pixel 100 of 64: onnxruntime fails every inference (index out of bounds)."""
    nodes = [
        helper.make_node("Gather", ["input", "index"], ["pixel"], axis=1),
        helper.make_node("MatMul", ["pixel", "spread"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(np.array([100], dtype=np.int64), "index"),
        numpy_helper.from_array(np.ones((1, 10), dtype=np.float32), "spread"),
    ]
    path.write_bytes(_model(nodes, initializers).SerializeToString())
    return path


def misshaped_model(path: Path) -> Path:
    """Answers 5 scores per image where it declares 10: the last reshape takes its shape
    from the data, so nothing checks the declaration before an inference runs."""
    weights = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "weights"], ["scores"]),
        helper.make_node("Shape", ["input"], ["input_shape"], end=1),
        helper.make_node("Concat", ["input_shape", "rest"], ["shape"], axis=0),
        helper.make_node("Reshape", ["scores", "shape"], ["reshaped"]),
        helper.make_node("Softmax", ["reshaped"], ["probabilities"], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "rest"),
    ]
    path.write_bytes(_model(nodes, initializers).SerializeToString())
    return path


def unloadable_model(path: Path) -> Path:
    """Not a model onnxruntime can load (a truncated protobuf): the server exits."""
    data = _model([helper.make_node("Identity", ["input"], ["probabilities"])], [])
    path.write_bytes(data.SerializeToString()[:-7])
    return path


MAKERS = {"failing": failing_model, "misshaped": misshaped_model, "unloadable": unloadable_model}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in MAKERS:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    MAKERS[argv[1]](Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
