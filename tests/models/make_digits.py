"""Train a small digit classifier on scikit-learn's bundled digits data and export it to ONNX.

Usage: python make_digits.py OUT_DIR

Writes OUT_DIR/model.onnx (float input "input" [N, 64], outputs "label" [N] and
"probabilities" [N, 10] as plain tensors) and OUT_DIR/samples.npz (held-out X float32
[n, 64], y int64 [n]) for calibration and accuracy checks. Deterministic: the split and
the training use fixed seeds, so the same library versions give the same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MODEL_FILE = "model.onnx"
SAMPLES_FILE = "samples.npz"
OPSET = 17  # old enough for the onnxruntime builds found on edge devices
SEED = 0


def generate(out_dir: Path, seed: int = SEED) -> None:
    """Train, export and write model.onnx and samples.npz into out_dir (created if needed).
    Another `seed` trains another version of the model on the same split."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = digits.data.astype(np.float32)  # 8x8 images flattened, pixel values 0..16
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=seed)
    classifier.fit(x_train, y_train)

    onnx_model = convert_sklearn(
        classifier,
        "digits",
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_FILE).write_bytes(onnx_model.SerializeToString())
    np.savez(out_dir / SAMPLES_FILE, X=x_test, y=y_test)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    generate(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
