"""Bad versions of the digits model, for the gates that must catch them: models with the
digits model's signature (float "input" [N, 64] -> "probabilities" [N, 10]) that load,
pass readiness, and then fail every inference or answer with the wrong shape; and two that
pass the active probe (one inference of zeros) and only show under real traffic: one
slow, one failing on real images.

Usage: python broken.py failing|misshaped|unloadable|slow|picky OUT_FILE
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


def _scores(extra: list[onnx.NodeProto], initializers: list[onnx.TensorProto],
            noise: str) -> onnx.ModelProto:  # fmt: skip
    """probabilities = softmax(input @ W + noise * 1e-30): `noise` is a [N, 1] or scalar
    tensor the extra nodes compute from the input (so nothing folds it away) and that
    changes no answer."""
    weights = np.random.default_rng(1).normal(size=(64, 10)).astype(np.float32)
    nodes = [
        *extra,
        helper.make_node("MatMul", ["input", "weights"], ["scores"]),
        helper.make_node("Mul", [noise, "tiny"], ["nudge"]),
        helper.make_node("Add", ["scores", "nudge"], ["nudged"]),
        helper.make_node("Softmax", ["nudged"], ["probabilities"], axis=1),
    ]
    initializers = [
        *initializers,
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(np.array(1e-30, dtype=np.float32), "tiny"),
    ]
    return _model(nodes, initializers)


def slow_model(path: Path, seconds: float = 0.3, size: int = 384) -> Path:
    """Answers right, slowly: every inference multiplies dense size x size matrices that
    depend on its input, as many as take about `seconds` on this machine's CPU (measured
    here: a fixed count took 0.15 s on one machine and 0.03 s on a faster one, under the
    0.1 s a test's latency gate allows)."""
    probe = _slow(path, 20, size)
    per_round = _seconds_per_inference(probe) / 20
    rounds = max(20, min(2000, round(seconds / max(per_round, 1e-6))))
    return _slow(path, rounds, size)


def _slow(path: Path, rounds: int, size: int) -> Path:
    mix = np.full((size, size), 1.0 / size, dtype=np.float32)
    nodes = [
        helper.make_node("ReduceSum", ["input"], ["total"], keepdims=0),
        helper.make_node("Mul", ["mix", "total"], ["m0"]),
    ]
    for i in range(rounds):
        nodes.append(helper.make_node("MatMul", [f"m{i}", "mix"], [f"m{i + 1}"]))
    nodes.append(helper.make_node("ReduceSum", [f"m{rounds}"], ["busy"], keepdims=0))
    model = _scores(nodes, [numpy_helper.from_array(mix, "mix")], "busy")
    path.write_bytes(model.SerializeToString())
    return path


def _seconds_per_inference(path: Path) -> float:
    import time

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ones((1, 64), dtype=np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def picky_model(path: Path) -> Path:
    """Answers a request of zeros (the active probe's) and fails any image with a bright
    pixel: it looks up the brightest pixel's value in a one-entry table (onnxruntime
    fails the inference: index out of bounds)."""
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["brightest"], axes=[1], keepdims=0),
        helper.make_node("Cast", ["brightest"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["looked_up"], axis=0),
        helper.make_node("Unsqueeze", ["looked_up", "column"], ["noise"]),
    ]
    initializers = [
        numpy_helper.from_array(np.zeros(1, dtype=np.float32), "table"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "column"),
    ]
    path.write_bytes(_scores(nodes, initializers, "noise").SerializeToString())
    return path


MAKERS = {"failing": failing_model, "misshaped": misshaped_model, "unloadable": unloadable_model,
          "slow": slow_model, "picky": picky_model}  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in MAKERS:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    MAKERS[argv[1]](Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
