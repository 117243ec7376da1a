"""Which rows calibrate and which are scored, and the thresholds, from spec.model.validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edgemodel_operator.optimize.gate import Mode, Thresholds
from edgemodel_operator.optimize.samples import Samples

MAX_DEFAULT_CALIBRATION_ROWS = 256


class ValidationSpec(Protocol):
    """The fields of api.spec.Validation this module reads."""

    @property
    def max_accuracy_drop(self) -> float: ...
    @property
    def calibration_rows(self) -> int | None: ...
    @property
    def mode(self) -> str | None: ...
    @property
    def min_cosine_similarity(self) -> float | None: ...
    @property
    def max_relative_error(self) -> float | None: ...
    @property
    def outputs(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class GatePlan:
    calibration: Samples | None  # static int8 calibrates on these (None: dynamic int8)
    evaluation: Samples | None  # the gate scores these (None: no gate)
    thresholds: Thresholds


def gate_plan(
    validation: ValidationSpec | None, samples: Samples | None, calibration: Samples | None
) -> GatePlan:
    """Split the rows so that the gate never scores a row that calibrated the variant: a
    separate calibration file leaves every sample row to the gate; without one, the first
    `calibrationRows` rows (default half, at most 256) calibrate and the rest are scored."""
    if validation is None:
        return GatePlan(None, None, Thresholds())
    mode: Mode | None = None
    if validation.mode in ("labels", "reference"):
        mode = "labels" if validation.mode == "labels" else "reference"
    limits = Thresholds(
        mode=mode,
        max_accuracy_drop=validation.max_accuracy_drop,
        min_cosine_similarity=validation.min_cosine_similarity,
        max_relative_error=validation.max_relative_error,
        outputs=tuple(validation.outputs),
    )
    if samples is None:
        return GatePlan(calibration, None, limits)
    if calibration is not None:
        return GatePlan(calibration, samples, limits)
    rows = validation.calibration_rows or min(MAX_DEFAULT_CALIBRATION_ROWS, len(samples) // 2)
    calib, evaluation = samples.split(rows)
    return GatePlan(calib, evaluation, limits)
