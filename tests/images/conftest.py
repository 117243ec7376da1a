"""Fixtures for the model-server tests: the digits model, and the server package on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_SRC = ROOT / "images" / "server"
for _path in (ROOT / "tests" / "models", SERVER_SRC):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import digits  # noqa: E402


@pytest.fixture(scope="session")
def digits_model() -> digits.DigitsModel:
    """The digits classifier (ONNX) and its held-out samples, built once and cached."""
    return digits.build()
