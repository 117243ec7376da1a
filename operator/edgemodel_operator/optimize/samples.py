"""Samples that drive calibration (static int8) and the accuracy gate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgemodel_operator.optimize.errors import OptimizeError


@dataclass(frozen=True)
class Samples:
    """Model inputs stacked on the first axis, with labels when the model is a classifier."""

    x: npt.NDArray[Any]
    y: npt.NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        if self.x.ndim < 1 or len(self.x) == 0:
            raise OptimizeError("samples need at least one input row")
        if self.y is not None and self.y.shape != (len(self.x),):
            raise OptimizeError(
                f"samples have {len(self.x)} inputs but labels of shape {self.y.shape}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def head(self, count: int) -> Samples:
        return Samples(self.x[:count], None if self.y is None else self.y[:count])


def load_samples(path: Path) -> Samples:
    """Read an .npz file with an array X (inputs) and optionally y (integer labels)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "X" not in data:
                raise OptimizeError(f"{path} has no array named X (found: {', '.join(data)})")
            x = np.asarray(data["X"])
            y = np.asarray(data["y"]).astype(np.int64) if "y" in data else None
    except (OSError, ValueError) as err:
        raise OptimizeError(f"cannot read samples from {path}: {err}") from err
    return Samples(x, y)
