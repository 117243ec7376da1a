"""The `serving` suite (no cluster): the model server against onnxruntime in-process."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from common import ROOT, env_with_pythonpath, free_port, log, pct, rounded, wait_for

SIZES = {
    "tiny": {"requests": 150},
    "full": {"requests": 2000},
}


def digits_model() -> Any:
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import digits  # the project's own builder, cached under ~/.cache

    return digits.build()


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --- serving ------------------------------------------------------------------------


class Client:
    """One kept-alive HTTP/1.1 connection to the model server."""

    def __init__(self, port: int, model: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = f"/v2/models/{model}/infer"

    def json(self, row: np.ndarray) -> np.ndarray:
        body = json.dumps(
            {
                "inputs": [
                    {"name": "input", "shape": list(row.shape), "datatype": "FP32",
                     "data": row.ravel().tolist()}
                ],
                "outputs": [{"name": "probabilities"}],
            }
        ).encode()  # fmt: skip
        self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"server answered {resp.status}: {payload[:200]!r}")
        out = json.loads(payload)["outputs"][0]
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])

    def binary(self, row: np.ndarray) -> np.ndarray:
        raw = np.ascontiguousarray(row, dtype="<f4").tobytes()
        header = json.dumps(
            {
                "inputs": [
                    {"name": "input", "shape": list(row.shape), "datatype": "FP32",
                     "parameters": {"binary_data_size": len(raw)}}
                ],
                "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
            }
        ).encode()  # fmt: skip
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        }
        self.conn.request("POST", self.path, header + raw, headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"server answered {resp.status}: {payload[:200]!r}")
        size = int(resp.getheader("Inference-Header-Content-Length") or len(payload))
        out = json.loads(payload[:size])["outputs"][0]
        return np.frombuffer(payload[size:], dtype="<f4").reshape(out["shape"])

    def close(self) -> None:
        self.conn.close()


def _concurrent(
    make: Callable[[], Callable[[int], object]], concurrency: int, per_worker: int
) -> dict[str, float]:
    """Run `per_worker` calls in each of `concurrency` threads; latency and throughput."""
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            call = make()
            for k in range(10):  # warm-up, own connection
                call(k)
            barrier.wait()
            for k in range(per_worker):
                t0 = time.perf_counter()
                call(k)
                lat[i].append((time.perf_counter() - t0) * 1000.0)
        except BaseException as err:  # reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    flat = [v for w in lat for v in w]
    return {
        "ms_p50": rounded(pct(flat, 50), 4),
        "ms_p99": rounded(pct(flat, 99), 4),
        "requests_per_s": rounded(len(flat) / wall, 1),
        "requests": len(flat),
    }


def suite_serving(size: str, work: Path) -> dict[str, Any]:
    n = SIZES[size]
    model = digits_model()
    x, _ = model.load_samples()
    rows = [x[i : i + 1] for i in range(len(x))]
    session = _session(model.model)
    port = free_port()
    env = env_with_pythonpath(ROOT / "images" / "server")
    env.update(
        EDGEMODEL_MODEL_NAME="digits",
        EDGEMODEL_MODEL_PATH=str(model.model),
        EDGEMODEL_PORT=str(port),
        EDGEMODEL_LOG_LEVEL="WARNING",
    )
    logfile = (work / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "edgemodel_server"], env=env, stdout=logfile, stderr=logfile
    )
    try:
        wait_for(lambda: _ready(port, server), timeout=60, what="the model server's readiness")
        check = Client(port, "digits")
        want = session.run(["probabilities"], {"input": rows[0]})[0]
        assert np.allclose(check.json(rows[0]), want, atol=1e-5), "JSON answer differs"
        assert np.allclose(check.binary(rows[0]), want, atol=1e-6), "binary answer differs"
        check.close()
        results: dict[str, Any] = {}
        for conc in (1, 8):
            per = max(20, n["requests"] // conc)

            def direct(s: ort.InferenceSession = session) -> Callable[[int], object]:
                return lambda k: s.run(["probabilities"], {"input": rows[k % len(rows)]})

            def over_http(kind: str) -> Callable[[], Callable[[int], object]]:
                def make() -> Callable[[int], object]:
                    c = Client(port, "digits")
                    call = c.json if kind == "json" else c.binary
                    return lambda k: call(rows[k % len(rows)])

                return make

            case = {
                "direct_onnxruntime": _concurrent(direct, conc, per),
                "server_json": _concurrent(over_http("json"), conc, per),
                "server_binary": _concurrent(over_http("binary"), conc, per),
            }
            base = case["direct_onnxruntime"]["ms_p50"]
            for key in ("server_json", "server_binary"):
                case[key]["added_ms_p50"] = rounded(case[key]["ms_p50"] - base, 4)
            results[f"concurrency_{conc}"] = case
            log(f"serving: concurrency {conc}: {case}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        logfile.close()
    return {
        "model": "digits MLP fp32, batch 1, output probabilities [1, 10]",
        "client": "http.client, one kept-alive connection per thread, in the bench process",
        "server": "python -m edgemodel_server (images/server) on 127.0.0.1, CPU provider",
        "results": results,
        "kserve": (
            "skipped: `pip install kserve` would add ~35 packages to the shared venv and "
            "replace its kubernetes and protobuf versions (fastapi, uvicorn, grpcio, pandas, "
            "...), which the operator and tests use"
        ),
    }


def _ready(port: int, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"the model server exited with {proc.returncode}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/v2/health/ready")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgemodel-bench-"))
