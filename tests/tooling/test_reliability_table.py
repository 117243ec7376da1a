"""The README's reliability table is what tests/faults/results.json says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "faults" / "report.py"


def test_the_readme_table_matches_the_committed_results() -> None:
    check = subprocess.run([sys.executable, str(REPORT), "--check"], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stderr
