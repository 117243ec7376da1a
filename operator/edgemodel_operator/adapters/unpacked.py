"""Run a model-server image without a container runtime, for the daemonless smoke test.

The platform image's layers are unpacked once into a cache (the model layer aside: the
model is passed by path) and the server started with the image's own dynamic loader,
libraries and Python: the bytes a node will run, no daemon, no privileges. An arm64 image
runs under emulation where the host has binfmt for it; where it has none, or where the
image's loader cannot start, the result says the image was not executed and why.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import struct
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgemodel_operator.adapters import oip
from edgemodel_operator.adapters.docker_engine import free_port
from edgemodel_operator.adapters.image_errors import SmokeTestFailed
from edgemodel_operator.adapters.registry import Registry

Progress = Callable[[str], None]
PT_INTERP = 3


class NotExecuted(Exception):
    """The image could not be started here (no emulation for its architecture, say)."""


def inside(root: Path, path: str, hops: int = 40) -> Path:
    """`path` as the image sees it, resolved within `root` (absolute links stay inside)."""
    current = root
    parts = [p for p in path.split("/") if p and p != "."]
    while parts and hops > 0:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops -= 1
            target = os.readlink(candidate)
            base = root if target.startswith("/") else current
            parts = [p for p in target.split("/") if p and p != "."] + parts
            current = base
            continue
        current = candidate
    return current


def interpreter(binary: Path) -> str | None:
    """The ELF program interpreter (dynamic loader) a 64-bit executable names."""
    with binary.open("rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            return None
        endian = "<" if header[5] == 1 else ">"
        (phoff,) = struct.unpack(endian + "Q", header[32:40])
        phentsize, phnum = struct.unpack(endian + "HH", header[54:58])
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            entry = f.read(phentsize)
            (kind,) = struct.unpack(endian + "I", entry[:4])
            if kind == PT_INTERP:
                (offset,) = struct.unpack(endian + "Q", entry[8:16])
                (size,) = struct.unpack(endian + "Q", entry[32:40])
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode()
    return None


def _library_dirs(root: Path, python_home: Path) -> list[Path]:
    dirs = [python_home / "lib"]
    for conf in sorted((root / "etc" / "ld.so.conf.d").glob("*.conf")):
        for line in conf.read_text(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("/"):
                dirs.append(inside(root, line))
    dirs += [inside(root, "/lib"), inside(root, "/usr/lib")]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def unpack(layers: Sequence[bytes], target: Path) -> None:
    """Apply gzip'd layer tars in order into target (whiteouts honoured, devices skipped)."""
    for blob in layers:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            members = []
            for member in tar.getmembers():
                name = Path(member.name)
                if name.name == ".wh..wh..opq":
                    folder = target / name.parent
                    if folder.is_dir():
                        for child in folder.iterdir():
                            _remove(child)
                    continue
                if name.name.startswith(".wh."):
                    _remove(target / name.parent / name.name[4:])
                    continue
                if member.isdev() or member.ischr() or member.isblk() or member.isfifo():
                    continue
                _remove(target / name) if not member.isdir() else None
                members.append(member)
            tar.extractall(target, members=members, filter="fully_trusted")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


class UnpackedRunner:
    def __init__(self, registry: Registry, cache: Path) -> None:
        self._registry = registry
        self._cache = cache

    def _rootfs(self, repository: str, layers: Sequence[str], progress: Progress) -> Path:
        key = hashlib.sha256("\n".join(layers).encode()).hexdigest()[:16]
        root = self._cache / key
        if (root / ".unpacked").exists():
            return root
        progress(f"Smoke test: unpacking {len(layers)} layers of the server image")
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            unpack([self._registry.blob(repository, d) for d in layers], partial)
        except BaseException:  # a full disk, say: what was unpacked would keep it full
            shutil.rmtree(partial, ignore_errors=True)
            raise
        (partial / ".unpacked").write_text("")
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
        return root

    def serve_once(
        self, repository: str, manifest: Mapping[str, Any], config: Mapping[str, Any],
        arch: str, model_file: Path, model: str, progress: Progress,
        environment: Mapping[str, str] | None = None, ready_timeout: float = 240.0,
    ) -> oip.Served:  # fmt: skip
        """Start the platform image's server on the model (its last layer is the model:
        passed by path instead), send one inference. NotExecuted when it cannot start here."""
        layer_digests = [str(layer["digest"]) for layer in manifest["layers"]][:-1]
        root = self._rootfs(repository, layer_digests, progress)
        settings = config.get("config") or {}
        entry = list(settings.get("Entrypoint") or [])
        if not entry:
            raise NotExecuted("the image has no entrypoint")
        python = inside(root, entry[0]).resolve()
        if not python.is_file() or not python.is_relative_to(root.resolve()):
            raise NotExecuted(f"{entry[0]} is not in the image")
        loader_path = interpreter(python)
        if loader_path is None:
            raise NotExecuted(f"{entry[0]} is not a dynamically linked 64-bit program")
        loader = inside(root, loader_path)
        home = python.parent.parent
        version = python.name.removeprefix("python") or "3"
        image_env = dict(e.split("=", 1) for e in settings.get("Env") or [] if "=" in e)
        paths = [str(inside(root, p)) for p in image_env.get("PYTHONPATH", "").split(":") if p]
        venv = inside(root, str(Path(entry[0]).parent.parent))
        paths += [str(p) for p in sorted(venv.glob(f"lib/python{version}*/site-packages"))]
        port = free_port()
        env = {
            **{k: v for k, v in image_env.items() if k.startswith("EDGEMODEL_")},
            "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHOME": str(home),
            "PYTHONPATH": ":".join(paths), "PYTHONDONTWRITEBYTECODE": "1",
            **dict(environment or {}),
            "EDGEMODEL_MODEL_PATH": str(model_file), "EDGEMODEL_MODEL_NAME": model,
            "EDGEMODEL_HOST": "127.0.0.1", "EDGEMODEL_PORT": str(port),
            "EDGEMODEL_TERMINATION_LOG": os.devnull,
            # One process: its workers would start the image's Python with the host's loader.
            "EDGEMODEL_WORKERS": "1",
        }  # fmt: skip
        library_path = ":".join(str(d) for d in _library_dirs(root, home))
        argv = [str(loader), "--library-path", library_path, str(python), *entry[1:]]
        progress(f"Smoke test: running the {arch} image's server without a daemon")
        log = root.with_name(root.name + f"-{port}.log")
        try:
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)  # fmt: skip
        except OSError as err:
            if err.errno in (errno.ENOEXEC, errno.ENOENT):
                raise NotExecuted(f"this host cannot run {arch} programs (no emulation)") from err
            raise
        base = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            failed = oip.wait_ready(base, ready_timeout, alive=lambda: proc.poll() is None)
            if failed:
                raise SmokeTestFailed(f"the {arch} image did not become ready: {failed}",
                                      _tail(log))  # fmt: skip
            progress(f"Smoke test: {arch} ready after {time.monotonic() - started:.1f}s")
            failed = oip.check(base, model, timeout=60)
            if failed:
                raise SmokeTestFailed(f"the {arch} image: {failed}", _tail(log))
            meta = oip.metadata(base, model)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                log.unlink()
        return oip.served_from(meta)


def _tail(log: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return [line for line in log.read_text(errors="replace").splitlines() if line][-20:]
    return []
