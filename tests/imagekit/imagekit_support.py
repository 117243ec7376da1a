"""Shared by the image-build tests: the kit's addresses, running hack/imagekit.py, and the
timings and sizes printed at the end of the run."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "hack" / "imagekit.py"
IMAGES = ROOT / "images"

TIMINGS: list[tuple[str, float]] = []
REPORT: list[str] = []


def record(what: str, seconds: float) -> None:
    TIMINGS.append((what, seconds))


def report(line: str) -> None:
    REPORT.append(line)


def kit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run hack/imagekit.py with `args`, timed; fail the test with its message on error."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(KIT), *args], text=True, capture_output=True, check=False
    )
    record(f"imagekit {' '.join(args)}", time.monotonic() - started)
    if check and result.returncode != 0:
        pytest.fail(f"hack/imagekit.py {' '.join(args)} failed:\n{result.stderr}", False)
    return result


@dataclass(frozen=True)
class Kit:
    docker_host: str
    registry: str
    run_id: str  # makes this session's repositories its own

    def repository(self, name: str) -> str:
        return f"{self.registry}/edgemodels-test/{name}-{self.run_id}"
