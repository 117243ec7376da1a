"""Server settings, read once at start-up from EDGEMODEL_* environment variables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgemodel_server.cpus import usable_cpus

ACCELERATORS = ("cpu", "gpu", "npu")
PRECISIONS = ("fp32", "fp16", "int8", "int4", "original")  # original: served as published
LOG_FORMATS = ("json", "text")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A bad EDGEMODEL_* setting; the message names the variable and what is expected."""


@dataclass(frozen=True)
class ServerConfig:
    model_name: str
    model_path: Path
    model_version: str
    accelerator: str  # cpu | gpu | npu
    cpu_fallback: bool
    host: str
    port: int  # 0 picks a free port
    shutdown_grace_seconds: float = 10.0
    precision: str = "fp32"  # what the operator made of the model (reported, not applied)
    workers: int = 1  # server processes sharing the port (workers.py)
    intra_op_threads: int = 0  # onnxruntime threads per session; 0: onnxruntime's default
    reuse_port: bool = False  # SO_REUSEPORT on the listening socket (set in workers)
    worker: str | None = None  # this worker's index when several share the port
    target: str = ""  # the EdgeModel target and revision the pod serves (metric labels)
    revision: str = ""
    log_format: str = "json"  # json (one object per line) | text


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def load_config(env: Mapping[str, str]) -> ServerConfig:
    """Parse the EDGEMODEL_* variables; raise ConfigError naming the first bad one."""
    name = env.get("EDGEMODEL_MODEL_NAME", "model").strip()
    if not name or "/" in name or any(c.isspace() for c in name):
        raise ConfigError(
            f"EDGEMODEL_MODEL_NAME must be a non-empty name without '/' or spaces, got {name!r}"
        )
    path = Path(env.get("EDGEMODEL_MODEL_PATH", "/models/model.onnx").strip())
    version = env.get("EDGEMODEL_MODEL_VERSION", "1").strip()
    if not version or "/" in version:
        raise ConfigError(f"EDGEMODEL_MODEL_VERSION must be non-empty without '/', got {version!r}")
    accelerator = env.get("EDGEMODEL_ACCELERATOR", "cpu").strip().lower()
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"EDGEMODEL_ACCELERATOR must be cpu, gpu or npu, got {accelerator!r}")
    raw_port = env.get("EDGEMODEL_PORT", "8080").strip()
    try:
        port = int(raw_port)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"EDGEMODEL_PORT must be a port number 0..65535, got {raw_port!r}")
    raw_grace = env.get("EDGEMODEL_SHUTDOWN_GRACE_SECONDS", "10").strip()
    try:
        grace = float(raw_grace)
    except ValueError:
        grace = -1.0
    if not 0 <= grace <= 3600:
        raise ConfigError(
            f"EDGEMODEL_SHUTDOWN_GRACE_SECONDS must be 0..3600 seconds, got {raw_grace!r}"
        )
    precision = env.get("EDGEMODEL_PRECISION", "fp32").strip().lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"EDGEMODEL_PRECISION must be one of {PRECISIONS}, got {precision!r}")
    # auto: a process per usable core on CPU; one on a GPU or NPU, which every process
    # would load the model onto again.
    workers = _count(env, "EDGEMODEL_WORKERS", "auto",
                     auto=lambda: usable_cpus() if accelerator == "cpu" else 1)  # fmt: skip
    threads = _count(env, "EDGEMODEL_INTRA_OP_THREADS", "0", auto=lambda: 0, low=0)
    log_format = env.get("EDGEMODEL_LOG_FORMAT", "json").strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"EDGEMODEL_LOG_FORMAT must be json or text, got {log_format!r}")
    return ServerConfig(
        precision=precision,
        model_name=name,
        model_path=path,
        model_version=version,
        accelerator=accelerator,
        cpu_fallback=_flag(env, "EDGEMODEL_CPU_FALLBACK", default=False),
        host=env.get("EDGEMODEL_HOST", "127.0.0.1").strip() or "127.0.0.1",
        port=port,
        shutdown_grace_seconds=grace,
        workers=workers,
        intra_op_threads=threads,
        reuse_port="EDGEMODEL_WORKER_INDEX" in env,
        worker=env.get("EDGEMODEL_WORKER_INDEX"),
        target=_label(env, "EDGEMODEL_TARGET"),
        revision=_label(env, "EDGEMODEL_REVISION"),
        log_format=log_format,
    )


def _label(env: Mapping[str, str], name: str) -> str:
    """A metric label value taken from the pod: short, printable, one line."""
    value = env.get(name, "").strip()
    if len(value) > 63 or not value.isprintable():
        raise ConfigError(f"{name} must be at most 63 printable characters, got {value!r}")
    return value


def _count(
    env: Mapping[str, str], name: str, default: str, auto: Callable[[], int], low: int = 1
) -> int:
    raw = env.get(name, default).strip().lower()
    if raw == "auto":
        return auto()
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not low <= value <= 256:
        raise ConfigError(f"{name} must be auto or a number {low}..256, got {raw!r}")
    return value
