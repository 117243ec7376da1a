"""KServe's Python model server in a virtual environment of its own, under the cache.

`kserve` brings ~60 packages (fastapi, uvicorn, grpcio, kubernetes, pandas' neighbours ...)
and pins versions the operator's environment must not get, so it never goes into the
project's venv: `ensure()` makes ${EDGEMODEL_CACHE:-~/.cache/edgemodel-operator}/venvs/
kserve-<version> once, with the same onnxruntime and numpy versions as the project's venv,
and returns its python.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "models"))

from edge_models import cache_root

KSERVE_VERSION = "0.21.0"


def ensure() -> Path:
    """The python of KServe's venv, made on first use; RuntimeError says why it failed."""
    venv = cache_root() / "venvs" / f"kserve-{KSERVE_VERSION}"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file():
        return python
    pins = [f"kserve=={KSERVE_VERSION}", f"onnxruntime=={metadata.version('onnxruntime')}",
            f"numpy=={metadata.version('numpy')}"]  # fmt: skip
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(step[:4])} failed: {proc.stderr.strip()[-600:]}")
    marker.write_text(" ".join(pins) + "\n")
    return python


def size_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
