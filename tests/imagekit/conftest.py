"""Fixtures for the image-build tests: podman's Docker API and a local registry
(hack/imagekit.py), and the digits model's int8 variant.

The kit is started for the session and stopped at its end when this session started it
(IMAGEKIT_KEEP=1 keeps it); a running kit is reused and left running. Timings of each step
are printed at the end of the run.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for _path in (HERE, HERE.parent / "models", HERE.parent / "e2e"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import digits  # noqa: E402
from clusterkit import STATE  # noqa: E402
from imagekit_support import REPORT, TIMINGS, Kit, kit  # noqa: E402

from edgemodel_operator.optimize import Variant, load_samples, optimize  # noqa: E402


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS and not REPORT:
        return
    terminalreporter.section("image builds")
    for what, seconds in TIMINGS:
        terminalreporter.write_line(f"{seconds:7.1f}s  {what}")
    for line in REPORT:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def imagekit() -> Iterator[Kit]:
    # The cluster's kit (started with its real nodes) is the cluster's to stop, not ours.
    owned_by_cluster = (STATE / "started-imagekit").exists()
    started_here = kit("status", check=False).returncode != 0 and not owned_by_cluster
    kit("up")
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in kit("env").stdout.splitlines()
        if line.startswith("export ")
    )
    yield Kit(
        docker_host=env["DOCKER_HOST"],
        registry=env["EDGEMODEL_REGISTRY"],
        run_id=uuid.uuid4().hex[:8],
    )
    if started_here and not os.environ.get("IMAGEKIT_KEEP"):
        kit("down", check=False)


@pytest.fixture(scope="session")
def digits_model() -> digits.DigitsModel:
    return digits.build()


@pytest.fixture(scope="session")
def int8_model(
    digits_model: digits.DigitsModel, tmp_path_factory: pytest.TempPathFactory
) -> Variant:
    """The digits model quantized to int8 (static, calibrated on its samples)."""
    samples = load_samples(digits_model.samples)
    return optimize(digits_model.model, "int8", tmp_path_factory.mktemp("int8"), samples.head(100))
