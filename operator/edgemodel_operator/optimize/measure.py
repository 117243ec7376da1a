"""Latency of a model at batch 1 on a given execution provider, as the image will run it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgemodel_operator.optimize.errors import OptimizeError
from edgemodel_operator.optimize.samples import Samples

CPU = ("CPUExecutionProvider",)


@dataclass(frozen=True)
class Latency:
    provider: str  # the provider the session really used first
    runs: int
    p50_ms: float
    p99_ms: float


def available_providers() -> set[str]:
    return set(ort.get_available_providers())


def session(
    model: Path,
    providers: Sequence[str] = CPU,
    options: Sequence[Mapping[str, str]] | None = None,
    threads: int = 0,
) -> ort.InferenceSession:
    """A session on the first of `providers` that this onnxruntime build offers."""
    offered = set(ort.get_available_providers())
    chosen = [(p, dict(o)) for p, o in zip(providers, options or [{}] * len(providers),
                                           strict=True) if p in offered]  # fmt: skip
    if not chosen:
        raise OptimizeError(f"none of {list(providers)} is available in this onnxruntime build")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads  # 0: onnxruntime's default, one per core
    try:
        return ort.InferenceSession(
            str(model),
            so,
            providers=[p for p, _ in chosen],
            provider_options=[o for _, o in chosen],
        )
    except Exception as err:
        raise OptimizeError(f"onnxruntime cannot load {model.name}: {err}") from err


def latency(
    model: Path,
    samples: Samples,
    runs: int = 50,
    warmup: int = 5,
    providers: Sequence[str] = CPU,
    options: Sequence[Mapping[str, str]] | None = None,
) -> Latency:
    """p50/p99 of `runs` calls at batch 1 on the first evaluation row."""
    sess = session(model, providers, options)
    feed, _ = next(iter(samples.head(1).batches(sess.get_inputs(), batch_rows=1)))
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return Latency(
        provider=sess.get_providers()[0],
        runs=runs,
        p50_ms=float(np.percentile(times, 50)),
        p99_ms=float(np.percentile(times, 99)),
    )
