"""Batch-1 latency of model files on OpenVINO's execution provider (CPU device), run in the
OpenVINO venv (bench/openvino_env.py) by the optimize suite:

    python ov_latency.py FEED.npz ROUNDS RUNS NAME=MODEL.onnx ...

FEED.npz holds one model call's inputs by name. The models are measured in alternating
rounds; prints one JSON object: name -> {provider, ms_p50, ms_p99}, or {error} for a model
OpenVINO cannot compile.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def _reason(message: str) -> str:
    """OpenVINO's own words from a compile failure, without the C++ call stack."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("Unexpected:", "Check '", "[ERROR]"))]
    return (said[-1] if said else lines[-1])[:300]


def main(argv: list[str]) -> int:
    feed_file, rounds, runs = argv[0], int(argv[1]), int(argv[2])
    with np.load(feed_file) as data:
        feed = {name: data[name] for name in data.files}
    sessions, out = {}, {}
    for item in argv[3:]:
        name, path = item.split("=", 1)
        try:
            session = ort.InferenceSession(
                path, providers=["OpenVINOExecutionProvider"],
                provider_options=[{"device_type": "CPU"}],
            )  # fmt: skip
            for _ in range(5):
                session.run(None, feed)
            sessions[name] = session
        except Exception as err:  # a model OpenVINO cannot take is a result
            out[name] = {"error": _reason(str(err))}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                session.run(None, feed)
                times[name].append((time.perf_counter() - t0) * 1000.0)
    for name, session in sessions.items():
        out[name] = {
            "provider": session.get_providers()[0],
            "ms_p50": round(float(np.percentile(times[name], 50)), 4),
            "ms_p99": round(float(np.percentile(times[name], 99)), 4),
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
