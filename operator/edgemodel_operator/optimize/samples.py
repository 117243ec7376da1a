"""Samples that drive calibration (static int8) and the accuracy gate.

A samples file is an .npz: one array per model input, named like the input, its rows
stacked on the first axis, and optionally `y`, integer labels per row (a classifier). A
model with one input may call its array `X`. Row i of every array together make one model
call. An array whose rank equals the input's is sliced along the input's batch axis (rows
can be batched); one of rank + 1 holds one whole input tensor per row (a recurrent state,
a scalar), and such samples run one row per call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edgemodel_operator.optimize.errors import OptimizeError

Array = npt.NDArray[Any]
Feed = dict[str, Array]
SINGLE = "X"  # the array name for a model's only input, whatever the input is called
LABELS = "y"
BATCH_ROWS = 32
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class InputInfo(Protocol):
    """What onnxruntime's NodeArg tells about an input (name, type string, shape)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def shape(self) -> Sequence[int | str | None]: ...


@dataclass(frozen=True)
class Samples:
    """Model inputs by name, rows on the first axis, with labels when the model classifies."""

    inputs: Mapping[str, Array]
    y: npt.NDArray[np.int64] | None = None
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise OptimizeError("samples need at least one input array")
        counts = {name: len(a) if a.ndim else 0 for name, a in self.inputs.items()}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise OptimizeError(f"sample arrays need the same, non-zero number of rows: {counts}")
        object.__setattr__(self, "rows", next(iter(counts.values())))
        if self.y is not None and self.y.shape != (self.rows,):
            raise OptimizeError(f"samples have {self.rows} rows but labels of shape {self.y.shape}")

    @classmethod
    def of(cls, x: Array, y: npt.NDArray[np.int64] | None = None) -> Samples:
        """Samples of a single-input model."""
        return cls({SINGLE: np.asarray(x)}, y)

    @property
    def x(self) -> Array:
        """The only input array (single-input samples)."""
        if len(self.inputs) != 1:
            raise OptimizeError(f"samples have {len(self.inputs)} inputs, not one")
        return next(iter(self.inputs.values()))

    def __len__(self) -> int:
        return self.rows

    def select(self, rows: slice) -> Samples:
        picked = {name: a[rows] for name, a in self.inputs.items()}
        return Samples(picked, None if self.y is None else self.y[rows])

    def head(self, count: int) -> Samples:
        return self.select(slice(0, count))

    def split(self, calibration_rows: int) -> tuple[Samples, Samples]:
        """(calibration, evaluation): the first rows calibrate, the others are scored, so
        the gate never scores a row the variant was calibrated on."""
        if not 0 < calibration_rows < self.rows:
            raise OptimizeError(
                f"cannot split {self.rows} sample rows into {calibration_rows} for calibration "
                "and the rest for evaluation; give more rows or a separate calibration file"
            )
        return self.select(slice(0, calibration_rows)), self.select(slice(calibration_rows, None))

    def feeds(
        self, model_inputs: Sequence[InputInfo], batch_rows: int = BATCH_ROWS
    ) -> Iterator[Feed]:
        """The model calls that cover every row, in order (see `batches`)."""
        for feed, _ in self.batches(model_inputs, batch_rows):
            yield feed

    def batches(
        self, model_inputs: Sequence[InputInfo], batch_rows: int = BATCH_ROWS
    ) -> Iterator[tuple[Feed, int]]:
        """(feed, rows in it): batches where every array can be batched, else single rows."""
        bound = self._bind(model_inputs)
        batchable = all(a.ndim == len(i.shape) for i, a in bound)
        if batchable:
            fixed = {i.shape[0] for i, _ in bound if isinstance(i.shape[0], int) and i.shape[0] > 0}
            size = fixed.pop() if len(fixed) == 1 else batch_rows
            if fixed:
                raise OptimizeError("the model's inputs have different fixed batch sizes")
        else:
            size = 1
        for start in range(0, self.rows, size):
            stop = min(start + size, self.rows)
            if batchable:
                yield {i.name: _cast(a[start:stop], i) for i, a in bound}, stop - start
            else:  # an array of the input's rank keeps its batch axis, the others are tensors
                yield {i.name: _cast(a[start : start + 1] if a.ndim == len(i.shape) else a[start],
                                     i) for i, a in bound}, 1  # fmt: skip

    def _bind(self, model_inputs: Sequence[InputInfo]) -> list[tuple[InputInfo, Array]]:
        names = [i.name for i in model_inputs]
        if len(model_inputs) == 1 and len(self.inputs) == 1:
            pairs = [(model_inputs[0], self.x)]
        else:
            missing = [n for n in names if n not in self.inputs]
            extra = [n for n in self.inputs if n not in names]
            if missing or extra:
                raise OptimizeError(
                    f"the samples' arrays {sorted(self.inputs)} do not match the model's "
                    f"inputs {names} (missing {missing}, unknown {extra})"
                )
            pairs = [(i, self.inputs[i.name]) for i in model_inputs]
        for info, array in pairs:
            if array.ndim - len(info.shape) not in (0, 1):
                raise OptimizeError(
                    f"input {info.name!r} has rank {len(info.shape)}; its sample array has "
                    f"shape {array.shape} (expected rank {len(info.shape)} or "
                    f"{len(info.shape) + 1})"
                )
        return pairs


def _cast(array: Array, info: InputInfo) -> Array:
    dtype = _NUMPY_TYPES.get(info.type)
    return np.ascontiguousarray(array if dtype is None else array.astype(dtype, copy=False))


def load_samples(path: Path) -> Samples:
    """Read an .npz file: arrays named like the model's inputs (or X) and optionally y."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files if name != LABELS}
            y = np.asarray(data[LABELS]).astype(np.int64) if LABELS in data.files else None
    except (OSError, ValueError) as err:
        raise OptimizeError(f"cannot read samples from {path}: {err}") from err
    if not arrays:
        raise OptimizeError(f"{path} has no input arrays (only {LABELS!r})")
    return Samples(arrays, y)


def save_samples(path: Path, samples: Samples) -> Path:
    """Write samples in the format load_samples reads."""
    arrays = dict(samples.inputs)
    if samples.y is not None:
        arrays[LABELS] = samples.y
    with path.open("wb") as stream:
        np.savez(stream, **arrays)  # type: ignore[arg-type]
    return path
