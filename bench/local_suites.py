"""Helpers of the suites that need no cluster: the digits model."""

from __future__ import annotations

import sys
from typing import Any

from common import ROOT


def digits_model() -> Any:
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import digits  # the project's own builder, cached under ~/.cache

    return digits.build()
