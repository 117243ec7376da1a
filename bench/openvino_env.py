"""onnxruntime-openvino in a virtual environment of its own, under the cache.

The npu profile's images run OpenVINO's execution provider (images/server/providers.py).
Its wheel replaces the `onnxruntime` module, so it cannot sit in the project's venv beside
the CPU build: `ensure()` makes ${EDGEMODEL_CACHE:-~/.cache/edgemodel-operator}/venvs/
openvino-<version> once and returns its python; bench/ov_latency.py runs there.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "models"))

from edge_models import cache_root

OPENVINO_VERSION = "1.24.1"  # onnxruntime-openvino


def ensure() -> Path:
    """The python of the OpenVINO venv, made on first use; RuntimeError says why not."""
    venv = cache_root() / "venvs" / f"openvino-{OPENVINO_VERSION}"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file():
        return python
    pins = [f"onnxruntime-openvino=={OPENVINO_VERSION}", f"numpy=={metadata.version('numpy')}"]
    for step in (
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
    ):
        proc = subprocess.run(step, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(step[:4])} failed: {proc.stderr.strip()[-600:]}")
    marker.write_text(" ".join(pins) + "\n")
    return python
