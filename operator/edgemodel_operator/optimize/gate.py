"""Accuracy gate: does an optimized variant still answer like the float32 model?

`evaluate` runs both models on the same evaluation rows (never the calibration rows) and
measures, for every compared output, the cosine similarity and relative error against
float32 and, where the last axis holds classes, the top-1 agreement. The headline metric
depends on the mode:

- `labels`: top-1 accuracy against the samples' labels, for each model (a classifier);
- `reference`: no labels needed. For a classifier the top-1 agreement with float32; for
  any other model the lowest cosine similarity over the compared outputs.

A classifier is a model with an output that holds probabilities over its last axis (each
row sums to 1 on the evaluated samples: a softmax, per sample or per position as in CTC
text recognition), or integer labels [N].

`check` turns the figures into a verdict against the thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edgemodel_operator.optimize.errors import OptimizeError
from edgemodel_operator.optimize.samples import Samples

Mode = Literal["labels", "reference"]
Metric = Literal["accuracy", "top1_agreement", "cosine_similarity"]
DEFAULT_MIN_COSINE = 0.99
_FLOATS = ("tensor(float)", "tensor(float16)", "tensor(double)")


@dataclass(frozen=True)
class Thresholds:
    """The spec's spec.model.validation limits. None for mode: labels when the samples
    have labels, reference otherwise."""

    mode: Mode | None = None
    max_accuracy_drop: float = 0.01  # accuracy drop (labels) or top-1 disagreement
    min_cosine_similarity: float | None = None  # default 0.99 where no top-1 applies
    max_relative_error: float | None = None
    outputs: tuple[str, ...] = ()  # compare only these; default every float output

    def __post_init__(self) -> None:
        for name in ("max_accuracy_drop", "min_cosine_similarity", "max_relative_error"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be within 0..1, got {value}")


@dataclass(frozen=True)
class OutputFigures:
    """How one output of the variant compares with float32 over the evaluation rows."""

    name: str
    cosine: float  # cosine similarity of the outputs of all rows, flattened together
    cosine_min: float  # the lowest cosine of a single row (rows of one value excepted)
    relative_error: float  # |variant - fp32| / |fp32| over all rows (L2 norms)
    max_abs_error: float
    top1_agreement: float | None  # argmax over the last axis, where it has classes


@dataclass(frozen=True)
class GateResult:
    precision: str
    mode: Mode
    metric: Metric
    samples: int
    output: str  # the output the headline metric is taken from
    reference: float  # fp32's accuracy, or 1.0 for agreement / cosine
    candidate: float
    outputs: tuple[OutputFigures, ...] = field(default=())

    @property
    def drop(self) -> float:
        return max(0.0, self.reference - self.candidate)

    @property
    def classifier(self) -> bool:
        return self.metric != "cosine_similarity"

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    @property
    def agreement(self) -> float | None:
        found = next((o for o in self.outputs if o.name == self.output), None)
        return None if found is None else found.top1_agreement

    def describe(self) -> str:
        if self.metric == "accuracy":
            return f"{self.precision} accuracy {self.candidate:.3f} vs fp32 {self.reference:.3f}"
        if self.metric == "top1_agreement":
            return f"{self.precision} top-1 agreement with fp32 {self.candidate:.3f}"
        return f"{self.precision} cosine similarity to fp32 {self.candidate:.4f} ({self.output})"

    def to_status(self) -> dict[str, Any]:
        """The figures as status.images[].validation shows them."""
        return {
            "mode": self.mode,
            "metric": self.metric,
            "samples": self.samples,
            "fp32": round(self.reference, 6),
            "value": round(self.candidate, 6),
            "drop": round(self.drop, 6),
            "outputs": [
                {
                    "name": o.name,
                    "cosine": round(o.cosine, 6),
                    "relativeError": round(o.relative_error, 6),
                    **({} if o.top1_agreement is None
                       else {"top1Agreement": round(o.top1_agreement, 6)}),
                }
                for o in self.outputs
            ],
        }  # fmt: skip


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


def _session(model: Path) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises several unrelated types
        raise OptimizeError(f"onnxruntime cannot load {model.name}: {err}") from err


def _run(
    session: ort.InferenceSession, samples: Samples, names: Sequence[str]
) -> dict[str, list[npt.NDArray[Any]]]:
    """Outputs per row (batched calls are split back into rows)."""
    per_row: dict[str, list[npt.NDArray[Any]]] = {n: [] for n in names}
    for feed, rows in samples.batches(session.get_inputs()):
        results = session.run(list(names), feed)
        for name, value in zip(names, results, strict=True):
            array = np.asarray(value)
            if rows == 1:
                per_row[name].append(array)
            else:
                per_row[name].extend(array[i : i + 1] for i in range(rows))
    return per_row


def _class_output(
    session: ort.InferenceSession, names: Sequence[str], rows: Mapping[str, list[Any]]
) -> str | None:
    """The output that holds class probabilities over its last axis, or integer labels [N]."""
    for name in names:
        values = rows[name]
        if not values or not np.issubdtype(values[0].dtype, np.floating):
            continue
        if values[0].ndim < 2 or values[0].shape[-1] < 2:
            continue
        sums = np.concatenate([v.astype(np.float64).sum(axis=-1).ravel() for v in values])
        if np.all(np.abs(sums - 1.0) < 1e-3) and all((v >= 0).all() for v in values):
            return name
    for o in session.get_outputs():
        if o.type not in _FLOATS and len(o.shape) == 1:
            return str(o.name)
    return None


def _top1(values: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    if values.ndim <= 1 or not np.issubdtype(values.dtype, np.floating):
        return values.reshape(-1).astype(np.int64)  # already labels
    return np.asarray(values.argmax(axis=-1).reshape(-1), dtype=np.int64)


def _cosine(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def _figures(name: str, ref: list[npt.NDArray[Any]], cand: list[npt.NDArray[Any]]) -> OutputFigures:
    """Cosine and relative error over all rows together (one vector per model), the lowest
    per-row cosine, and the top-1 agreement where the last axis holds classes."""
    for r, c in zip(ref, cand, strict=True):
        if r.shape != c.shape:
            raise OptimizeError(
                f"output {name!r} has shape {c.shape} in the variant, {r.shape} in fp32"
            )
    rows_r = [r.astype(np.float64).ravel() for r in ref]
    rows_c = [c.astype(np.float64).ravel() for c in cand]
    all_r, all_c = np.concatenate(rows_r), np.concatenate(rows_c)
    norm = np.linalg.norm(all_r)
    diff = np.linalg.norm(all_c - all_r)
    per_row = [_cosine(r, c) for r, c in zip(rows_r, rows_c, strict=True) if r.size > 1]
    pairs = zip(ref, cand, strict=True)
    agree = [float(np.mean(_top1(r) == _top1(c))) for r, c in pairs if r.ndim and r.shape[-1] > 1]
    cosine = _cosine(all_r, all_c)
    return OutputFigures(
        name=name,
        cosine=cosine,
        cosine_min=min(per_row, default=cosine),
        relative_error=float(diff / norm) if norm else (0.0 if diff == 0 else 1.0),
        max_abs_error=float(np.max(np.abs(all_c - all_r))) if all_r.size else 0.0,
        top1_agreement=float(np.mean(agree)) if agree else None,
    )


def evaluate(
    reference: Path,
    candidate: Path,
    samples: Samples,
    precision: str,
    thresholds: Thresholds | None = None,
) -> GateResult:
    """Run the fp32 `reference` and the `candidate` on the evaluation `samples`; compare."""
    limits = thresholds or Thresholds()
    ref_session, cand_session = _session(reference), _session(candidate)
    outs = ref_session.get_outputs()
    if limits.outputs:
        unknown = sorted(set(limits.outputs) - {o.name for o in outs})
        if unknown:
            raise OptimizeError(f"validation.outputs names {unknown}, which the model lacks")
        compared = list(limits.outputs)
    else:
        compared = [o.name for o in outs if o.type in _FLOATS] or [outs[0].name]
    labels_out = [o.name for o in outs if o.type not in _FLOATS and len(o.shape) == 1]
    floats = [o.name for o in outs if o.type in _FLOATS]
    names = list(dict.fromkeys([*compared, *floats, *labels_out[:1]]))
    ref = _run(ref_session, samples, names)
    class_out = _class_output(ref_session, floats, ref)
    cand = _run(cand_session, samples, names)
    figures = tuple(_figures(n, ref[n], cand[n]) for n in compared)
    mode: Mode = limits.mode or ("labels" if samples.y is not None else "reference")
    if mode == "labels":
        if samples.y is None:
            raise OptimizeError("validation mode labels needs samples with labels (array y)")
        if class_out is None:
            raise OptimizeError(
                "validation mode labels needs a classifier: an output of probabilities "
                "[N, classes] or integer labels [N]; use mode reference for this model"
            )
        if ref[class_out][0].ndim > 2:
            raise OptimizeError(
                f"validation mode labels needs one label per row; output {class_out!r} has "
                f"shape {ref[class_out][0].shape} per row; use mode reference"
            )
        ref_top = np.concatenate([_top1(a) for a in ref[class_out]])
        cand_top = np.concatenate([_top1(a) for a in cand[class_out]])
        return GateResult(precision, mode, "accuracy", len(samples), class_out,
                          float(np.mean(ref_top == samples.y)),
                          float(np.mean(cand_top == samples.y)), figures)  # fmt: skip
    if class_out is not None:
        agreement = _figures(class_out, ref[class_out], cand[class_out]).top1_agreement
        if agreement is None:  # integer labels: compare them directly
            ref_top = np.concatenate([_top1(a) for a in ref[class_out]])
            cand_top = np.concatenate([_top1(a) for a in cand[class_out]])
            agreement = float(np.mean(ref_top == cand_top))
        return GateResult(precision, mode, "top1_agreement", len(samples), class_out, 1.0,
                          agreement, figures)  # fmt: skip
    worst = min(figures, key=lambda f: f.cosine)
    return GateResult(precision, mode, "cosine_similarity", len(samples), worst.name, 1.0,
                      worst.cosine, figures)  # fmt: skip


def check(result: GateResult, limits: Thresholds | float) -> Verdict:
    """Pass when every applicable threshold holds; the message gives the figures either way.

    A classifier is held to max_accuracy_drop; any other model to min_cosine_similarity
    (0.99 unless set) on every compared output. A min_cosine_similarity or
    max_relative_error set in the spec applies to every model.
    """
    if not isinstance(limits, Thresholds):
        limits = Thresholds(max_accuracy_drop=limits)
    problems: list[str] = []
    # Compare at the precision the message shows, so "drop 0.010 exceeds 0.010" never happens.
    if result.classifier:
        drop_ok = round(result.drop, 6) <= round(limits.max_accuracy_drop, 6)
        word = "within" if drop_ok else "exceeds"
        head = f"{result.describe()}: drop {result.drop:.3f} {word} {limits.max_accuracy_drop:.3f}"
        if not drop_ok:
            problems.append("drop")
    else:
        head = result.describe()
    min_cos = limits.min_cosine_similarity
    if min_cos is None and not result.classifier:
        min_cos = DEFAULT_MIN_COSINE
    details = []
    for o in result.outputs:
        line = f"{o.name}: cosine {o.cosine:.4f}, relative error {o.relative_error:.4f}"
        if min_cos is not None and round(o.cosine, 6) < round(min_cos, 6):
            problems.append(f"{o.name} cosine {o.cosine:.4f} below {min_cos:.4f}")
        rel = limits.max_relative_error
        if rel is not None and round(o.relative_error, 6) > round(rel, 6):
            problems.append(f"{o.name} relative error {o.relative_error:.4f} above {rel:.4f}")
        details.append(line)
    passed = not problems
    if not result.classifier:
        head += f": {'passed' if passed else 'failed'} (min cosine {min_cos:.4f})"
    failures = [p for p in problems if p != "drop"]
    message = (
        f"{head} ({result.samples} samples, max abs error {result.max_abs_error:.4g}"
        + (f"; {'; '.join(details)}" if not result.classifier else "")
        + ")"
        + (f"; failed: {'; '.join(failures)}" if failures else "")
    )
    return Verdict(passed=passed, message=message, result=result)
