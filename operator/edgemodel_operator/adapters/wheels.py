"""The Python wheels an image installs, downloaded once per set of requirements and platform
into a cache, so image builds need no package index (air-gapped sites mirror this folder).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edgemodel_operator.adapters.image_errors import BuildFailed

PYTHON = "3.11"  # Debian bookworm's python3, which the server images run
GLIBC_MINOR = 36  # bookworm's glibc 2.36: wheels up to manylinux_2_36 run there
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


def folder(cache: Path, requirements: Sequence[str], arch: str) -> Path:
    key = hashlib.sha256("\n".join([arch, PYTHON, *requirements]).encode()).hexdigest()[:12]
    return cache / f"{arch}-{key}"


def download(
    requirements: Sequence[str], arch: str, cache: Path, progress: Callable[[str], None]
) -> Path:
    """A folder with the wheels for `requirements` on linux/<arch> and requirements.txt."""
    target = folder(cache, requirements, arch)
    if (target / "requirements.txt").is_file():
        return target
    machine = MACHINES[arch]
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # pip takes every platform tag it may pick; it does not expand older glibcs itself.
    platforms = [f"--platform=manylinux_2_{m}_{machine}" for m in range(GLIBC_MINOR, 16, -1)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", *platforms, f"--platform=manylinux2014_{machine}",
        f"--python-version={PYTHON}", "--implementation=cp",
        f"--abi=cp{PYTHON.replace('.', '')}", f"--dest={partial}", *requirements,
    ]  # fmt: skip
    progress(f"Downloading wheels for linux/{arch}: {', '.join(requirements)}")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        detail = "\n".join(result.stderr.strip().splitlines()[-6:])
        raise BuildFailed(f"pip could not download {', '.join(requirements)} for {arch}:\n{detail}")
    (partial / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    size = sum(p.stat().st_size for p in target.glob("*.whl")) / 1e6
    progress(f"Downloaded {len(list(target.glob('*.whl')))} wheels ({size:.0f} MB) for {arch}")
    return target
