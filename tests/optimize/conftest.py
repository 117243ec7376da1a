"""Fixtures for the optimize tests: the digits model and its samples; tests/models on the
path for the real edge models and their data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1] / "models"
if str(MODELS) not in sys.path:
    sys.path.insert(0, str(MODELS))

import digits  # noqa: E402


@pytest.fixture(scope="session")
def digits_model() -> digits.DigitsModel:
    """The digits classifier (ONNX) and its held-out samples, built once and cached."""
    return digits.build()
