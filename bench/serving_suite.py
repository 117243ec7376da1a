"""The `serving` suite: our model server against KServe's Python model server.

Same model (the digits MLP, fp32), same machine, both on 127.0.0.1: ours with
EDGEMODEL_WORKERS=auto (one process per usable core sharing the port), KServe's at its
default of one uvicorn worker and with as many workers as cores. The load comes from
bench/loadgen.py in a process of its own: kept-alive connections, one request in flight
on each, at concurrency 1 and 8, JSON and binary tensors, in repeats that alternate the
order of the servers. Medians over the repeats. onnxruntime called in-process gives the
floor: what the model itself costs.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from common import ROOT, env_with_pythonpath, free_port, log, pct, rounded, wait_for

BENCH = Path(__file__).resolve().parent
SIZES = {"tiny": {"requests": 300, "repeats": 1}, "full": {"requests": 4000, "repeats": 3}}
CONCURRENCY = (1, 8)
KINDS = ("json", "binary")
GOAL = {"throughput_x": 3.0}


def _ready(port: int, path: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"the server exited with {proc.returncode}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _check(port: int, row: np.ndarray, want: np.ndarray) -> None:
    """One JSON and one binary inference, compared with onnxruntime's answer."""
    sys.path.insert(0, str(BENCH))
    from loadgen import request_bytes

    for kind in KINDS:
        raw = request_bytes("digits", kind, row)
        head, _, body = raw.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v2/models/digits/infer", body, headers)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{kind} answer {resp.status}: {payload[:200]!r}")
        size = resp.getheader("Inference-Header-Content-Length")
        meta = json.loads(payload[: int(size)] if size else payload)["outputs"][0]
        got = (np.frombuffer(payload[int(size) :], "<f4") if size
               else np.asarray(meta["data"], np.float32))  # fmt: skip
        if not np.allclose(got.reshape(want.shape), want, atol=1e-5):
            raise RuntimeError(f"{kind} answer differs from onnxruntime's")


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], ready: str,
                 port: int, work: Path) -> None:  # fmt: skip
        self.name, self.port = name, port
        self.log = (work / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=self.log, cwd=work)
        wait_for(lambda: _ready(port, ready, self.proc), timeout=120, what=f"{name} ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _ours(model: Path, work: Path) -> Server:
    port = free_port()
    env = env_with_pythonpath(ROOT / "images" / "server")
    env.update(EDGEMODEL_MODEL_NAME="digits", EDGEMODEL_MODEL_PATH=str(model),
               EDGEMODEL_PORT=str(port), EDGEMODEL_LOG_LEVEL="WARNING",
               EDGEMODEL_WORKERS="auto")  # fmt: skip
    return Server("edgemodel", [sys.executable, "-m", "edgemodel_server"], env,
                  "/v2/health/ready", port, work)  # fmt: skip


def _kserve(python: Path, model: Path, work: Path, workers: int) -> Server:
    port = free_port()
    argv = [str(python), str(BENCH / "kserve_server.py"), "--model_name", "digits",
            "--model_path", str(model), "--http_port", str(port),
            "--workers", str(workers)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return Server(f"kserve-{workers}w", argv, env, "/v2/models/digits/ready", port, work)


def _load(server: Server, kind: str, concurrency: int, requests: int) -> dict[str, float]:
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(server.port), "--model",
            "digits", "--kind", kind, "--concurrency", str(concurrency), "--requests",
            str(max(50, requests // concurrency))]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen against {server.name} failed: {proc.stderr[-800:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _direct(model: Path, row: np.ndarray, count: int) -> dict[str, float]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for _ in range(50):
        session.run(["probabilities"], {"input": row})
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        session.run(["probabilities"], {"input": row})
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"ms_p50": rounded(pct(times, 50), 4), "ms_p99": rounded(pct(times, 99), 4)}


def _median_runs(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "requests_per_s": rounded(statistics.median(r["requests_per_s"] for r in runs), 1),
        "ms_p50": rounded(statistics.median(r["ms_p50"] for r in runs), 4),
        "ms_p99": rounded(statistics.median(r["ms_p99"] for r in runs), 4),
        "runs": [r["requests_per_s"] for r in runs],
    }


def suite_serving(size: str, work: Path) -> dict[str, Any]:
    from kserve_env import KSERVE_VERSION, ensure, size_bytes
    from local_suites import digits_model

    n = SIZES[size]
    model = digits_model()
    x, _ = model.load_samples()
    row = x[:1]
    want = ort.InferenceSession(str(model.model), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"input": row})[0]  # fmt: skip
    sys.path.insert(0, str(ROOT / "images" / "server"))
    from edgemodel_server.cpus import usable_cpus

    cores = usable_cpus()
    with_kserve = os.environ.get("BENCH_KSERVE", "1") != "0"  # 0: ours only (the smoke test)
    python = ensure() if with_kserve else None
    servers: list[Server] = []
    try:
        servers.append(_ours(model.model, work))
        if python is not None:
            servers.append(_kserve(python, model.model, work, 1))
            if cores > 1:
                servers.append(_kserve(python, model.model, work, cores))
        for server in servers:
            _check(server.port, row, want)
            for kind in KINDS:  # warm every worker and path up; not measured
                for conc in CONCURRENCY:
                    _load(server, kind, conc, 200)
        raw: dict[str, dict[str, list[dict[str, float]]]] = {s.name: {} for s in servers}
        for rep in range(n["repeats"]):
            for conc in CONCURRENCY:
                for kind in KINDS:
                    order = servers if rep % 2 == 0 else servers[::-1]
                    for server in order:
                        result = _load(server, kind, conc, n["requests"])
                        raw[server.name].setdefault(f"{kind}_c{conc}", []).append(result)
                        log(f"serving: rep {rep} {server.name} {kind} c{conc}: {result}")
    finally:
        for server in servers:
            server.stop()
    results = {name: {case: _median_runs(runs) for case, runs in cases.items()}
               for name, cases in raw.items()}  # fmt: skip
    ours = results["edgemodel"]
    comparison: dict[str, Any] = {}
    for case in ours if python is not None else ():
        best = max((r[case] for n_, r in results.items() if n_ != "edgemodel"),
                   key=lambda r: r["requests_per_s"])  # fmt: skip
        x_rps = rounded(ours[case]["requests_per_s"] / best["requests_per_s"], 2)
        comparison[case] = {
            "throughput_x_vs_best_kserve": x_rps,
            "p99_ms_ours_vs_kserve": [ours[case]["ms_p99"], best["ms_p99"]],
            "reached": x_rps >= GOAL["throughput_x"] and ours[case]["ms_p99"] < best["ms_p99"],
        }
    rps = {case: figures["requests_per_s"] for case, figures in ours.items()}
    no_collapse = {kind: rps[f"{kind}_c8"] >= rps[f"{kind}_c1"] for kind in KINDS}
    ours_env = sum(size_bytes(Path(ort.__file__).parent.parent / d) for d in
                   ("onnxruntime", "numpy", "numpy.libs", "google", "flatbuffers")
                   if (Path(ort.__file__).parent.parent / d).exists())  # fmt: skip
    ours_env += size_bytes(ROOT / "images" / "server" / "edgemodel_server")
    return {
        "model": "digits MLP fp32, batch 1, output probabilities [1, 10]",
        "cores": cores,
        "servers": {
            "edgemodel": f"python -m edgemodel_server (images/server), EDGEMODEL_WORKERS=auto "
            f"= {cores} processes on one port (SO_REUSEPORT)",
            "kserve": f"kserve {KSERVE_VERSION} ModelServer (uvicorn) with an onnxruntime "
            "kserve.Model (bench/kserve_server.py), in its own venv; 1 worker (its "
            f"default) and {cores} workers"
            if python
            else "not run in this run (BENCH_KSERVE=0)",
        },
        "load": f"bench/loadgen.py in its own process, kept-alive connections, "
        f"{n['requests']} requests per case and run, {n['repeats']} repeat(s) with the "
        "server order alternating; medians",
        "direct_onnxruntime": _direct(model.model, row, 2000),
        "results": results,
        "comparison": comparison,
        "goal": {**GOAL, "no_collapse": "ours at concurrency 8 >= ours at 1"},
        "no_collapse": no_collapse,
        "installed_bytes": {
            "edgemodel": ours_env,
            "kserve": size_bytes(python.parent.parent) if python else None,
            "note": "installed Python packages of each server (our server, onnxruntime, numpy, "
            "protobuf, flatbuffers; KServe's whole venv), not images: no image was "
            "built in this run. Our cpu image measured 104.6 MB compressed "
            "(images/README.md).",
        },
    }
