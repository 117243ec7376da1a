"""The digits test model, built once per version of its generator and cached on disk.

Tests use `build()` (through a session fixture): the first call trains and exports the
model (about 2 s), later calls, in this run or the next, return the cached files at once.
The cache lives in ${XDG_CACHE_HOME:-~/.cache}/edgemodel-operator/models/digits-<hash>,
where <hash> is taken from make_digits.py, so editing the generator builds a new model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import make_digits
import numpy as np
import numpy.typing as npt

GENERATOR = Path(make_digits.__file__).resolve()


@dataclass(frozen=True)
class DigitsModel:
    """Where the model and its held-out samples are, and how to read the samples."""

    dir: Path
    model: Path
    samples: Path

    def load_samples(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        with np.load(self.samples) as data:
            return data["X"].astype(np.float32), data["y"].astype(np.int64)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgemodel-operator" / "models"


def generator_hash() -> str:
    return hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:16]


def build(root: Path | None = None) -> DigitsModel:
    """Return the cached digits model, generating it first if this generator has not yet."""
    root = root if root is not None else cache_root()
    target = root / f"digits-{generator_hash()}"
    paths = DigitsModel(
        dir=target,
        model=target / make_digits.MODEL_FILE,
        samples=target / make_digits.SAMPLES_FILE,
    )
    if paths.model.is_file() and paths.samples.is_file():
        return paths
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so concurrent runs never see half a model.
    staging = Path(tempfile.mkdtemp(prefix=".digits-", dir=root))
    try:
        make_digits.generate(staging)
        try:
            staging.rename(target)
        except OSError:
            if not paths.model.is_file():  # not another run that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths
