"""Accuracy gate: does an optimized variant still answer like the float32 model?

`evaluate` runs both models on the same samples. With labels (a classifier) it compares
each model's top-1 accuracy; without, it measures how often the variant's top-1 agrees
with the float32 model's. Either way it also reports the largest absolute difference of
the compared output. `check` turns the figures into a verdict against maxAccuracyDrop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edgemodel_operator.optimize.errors import OptimizeError
from edgemodel_operator.optimize.samples import Samples

BATCH_ROWS = 256


@dataclass(frozen=True)
class GateResult:
    precision: str
    metric: Literal["accuracy", "agreement"]
    samples: int
    output: str  # the compared output
    reference: float  # fp32 accuracy, or 1.0 for agreement
    candidate: float  # variant accuracy, or its top-1 agreement with fp32
    max_abs_error: float  # largest |variant - fp32| over the compared output
    agreement: float  # share of samples whose top-1 equals fp32's

    @property
    def drop(self) -> float:
        return max(0.0, self.reference - self.candidate)

    def describe(self) -> str:
        if self.metric == "accuracy":
            return f"{self.precision} accuracy {self.candidate:.3f} vs fp32 {self.reference:.3f}"
        return f"{self.precision} top-1 agreement with fp32 {self.candidate:.3f}"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    message: str
    result: GateResult


class GateFailed(OptimizeError):
    """Raised by Verdict users that want an exception; carries the verdict."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


def _run(model: Path, x: npt.NDArray[Any], output: str | None) -> tuple[str, npt.NDArray[Any]]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise OptimizeError(
            f"the gate supports models with one input; {model.name} has {len(inputs)}"
        )
    first = inputs[0]
    if output is None:
        outs = session.get_outputs()
        floats = [o.name for o in outs if o.type in ("tensor(float)", "tensor(float16)")]
        output = str(floats[0] if floats else outs[0].name)
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    batch_dim = first.shape[0] if first.shape else None
    size = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else BATCH_ROWS
    parts: list[npt.NDArray[Any]] = []
    for start in range(0, len(x), size):
        batch = x[start : start + size].astype(dtype)
        (result,) = session.run([output], {first.name: batch})
        parts.append(np.asarray(result, dtype=np.float64))
    return output, np.concatenate(parts)


def _top1(values: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    if values.ndim == 1:  # already labels (or one score per sample)
        return values.astype(np.int64)
    return np.asarray(values.reshape(len(values), -1).argmax(axis=1), dtype=np.int64)


def evaluate(
    reference: Path,
    candidate: Path,
    samples: Samples,
    precision: str,
    output: str | None = None,
) -> GateResult:
    """Run the fp32 `reference` and the `candidate` variant on `samples` and compare."""
    name, ref = _run(reference, samples.x, output)
    _, cand = _run(candidate, samples.x, name)
    if ref.shape != cand.shape:
        raise OptimizeError(
            f"output {name!r} has shape {cand.shape} in the variant, {ref.shape} in fp32"
        )
    ref_top, cand_top = _top1(ref), _top1(cand)
    agreement = float(np.mean(ref_top == cand_top))
    max_abs = float(np.max(np.abs(ref - cand))) if ref.size else 0.0
    if samples.y is not None:
        return GateResult(
            precision=precision,
            metric="accuracy",
            samples=len(samples),
            output=name,
            reference=float(np.mean(ref_top == samples.y)),
            candidate=float(np.mean(cand_top == samples.y)),
            max_abs_error=max_abs,
            agreement=agreement,
        )
    return GateResult(
        precision=precision,
        metric="agreement",
        samples=len(samples),
        output=name,
        reference=1.0,
        candidate=agreement,
        max_abs_error=max_abs,
        agreement=agreement,
    )


def check(result: GateResult, max_drop: float) -> Verdict:
    """Pass when the drop is at most `max_drop`; the message gives the figures either way."""
    if not 0 <= max_drop <= 1:
        raise ValueError(f"max_drop must be within 0..1, got {max_drop}")
    drop = result.drop
    # Compare at the precision the message shows, so "drop 0.010 exceeds 0.010" never happens.
    passed = round(drop, 6) <= round(max_drop, 6)
    word = "within" if passed else "exceeds"
    message = (
        f"{result.describe()}: drop {drop:.3f} {word} {max_drop:.3f} "
        f"({result.samples} samples, max abs error {result.max_abs_error:.4g})"
    )
    return Verdict(passed=passed, message=message, result=result)
