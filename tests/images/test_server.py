"""The model server (images/server) against the real digits model, in-process, no cluster.

The server runs in a thread on 127.0.0.1 with a free port; requests go through a plain
HTTP/1.1 keep-alive connection, and through tritonclient as a standard client.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from digits import DigitsModel

from edgemodel_server import providers
from edgemodel_server.app import ModelServer, create_server, drain
from edgemodel_server.config import ConfigError, ServerConfig, load_config
from edgemodel_server.protocol import HEADER_LENGTH, decode_infer_response

MODEL = "digits"
SERVER_SRC = Path(__file__).resolve().parents[2] / "images" / "server"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.conn.request(method, path, body=data, headers=headers or {})
        response = self.conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())

    def close(self) -> None:
        self.conn.close()


def _config(model: Path, **changes: Any) -> ServerConfig:
    base = ServerConfig(
        model_name=MODEL,
        model_path=model,
        model_version="1",
        accelerator="cpu",
        cpu_fallback=False,
        host="127.0.0.1",
        port=0,
        shutdown_grace_seconds=2.0,
    )
    return replace(base, **changes)


def _wait_loaded(server: ModelServer) -> None:
    deadline = time.monotonic() + 20
    while server.model.ready_reason() == "the model is loading":
        assert time.monotonic() < deadline, "the model did not load in 20 s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def running(digits_model: DigitsModel) -> Iterator[ModelServer]:
    server = create_server(_config(digits_model.model))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    _wait_loaded(server)
    yield server
    drain(server, 2.0)
    thread.join(timeout=5)


def _start(config: ServerConfig) -> tuple[ModelServer, threading.Thread]:
    server = create_server(config)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    _wait_loaded(server)
    return server, thread


@pytest.fixture
def client(running: ModelServer) -> Iterator[Client]:
    c = Client(running.port)
    yield c
    c.close()


@pytest.fixture(scope="module")
def reference(digits_model: DigitsModel) -> ort.InferenceSession:
    return ort.InferenceSession(str(digits_model.model), providers=["CPUExecutionProvider"])


def _infer_json(x: np.ndarray, nested: bool = True, **extra: Any) -> dict[str, Any]:
    data = x.tolist() if nested else x.reshape(-1).tolist()
    return {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": data}],
        **extra,
    }


def _tensor(name: str, shape: list[int], datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _outputs(reply: Reply) -> dict[str, np.ndarray]:
    return decode_infer_response(reply.body, reply.headers.get(HEADER_LENGTH))


# --- health and metadata ----------------------------------------------------------------


def test_health_live_and_ready(client: Client) -> None:
    assert client.call("GET", "/v2/health/live").status == 200
    ready = client.call("GET", "/v2/health/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True})
    assert client.call("GET", f"/v2/models/{MODEL}/ready").status == 200
    assert client.call("GET", f"/v2/models/{MODEL}/versions/1/ready").status == 200


def test_server_metadata(client: Client) -> None:
    reply = client.call("GET", "/v2")
    assert reply.status == 200
    meta = reply.json()
    assert meta["name"] == "edgemodel-server"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_from_the_session(client: Client) -> None:
    reply = client.call("GET", f"/v2/models/{MODEL}")
    assert reply.status == 200
    meta = reply.json()
    assert meta["name"] == MODEL
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ]
    assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"
    assert meta["parameters"]["accelerator"] == "cpu"
    assert meta["parameters"]["cpu_fallback"] is False


# --- inference --------------------------------------------------------------------------


def test_json_infer_matches_onnxruntime(
    client: Client, digits_model: DigitsModel, reference: ort.InferenceSession
) -> None:
    x, y = digits_model.load_samples()
    batch = x[:8]
    reply = client.call("POST", f"/v2/models/{MODEL}/infer", _infer_json(batch, id="req-7"))
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL, "1", "req-7")
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("label", "INT64", [8]),
        ("probabilities", "FP32", [8, 10]),
    ]
    got = _outputs(reply)
    want_labels, want_probs = reference.run(None, {"input": batch})
    np.testing.assert_array_equal(got["label"], want_labels)
    np.testing.assert_allclose(got["probabilities"], want_probs, rtol=1e-6, atol=1e-7)
    assert np.mean(got["label"] == y[:8]) >= 0.875  # the model is ~97% accurate


def test_json_infer_flat_data_on_all_samples_is_accurate(
    client: Client, digits_model: DigitsModel
) -> None:
    x, y = digits_model.load_samples()
    request = _infer_json(x, nested=False, outputs=[{"name": "label"}])
    reply = client.call("POST", f"/v2/models/{MODEL}/infer", request)
    assert reply.status == 200, reply.body
    body = reply.json()
    assert "id" not in body
    assert [o["name"] for o in body["outputs"]] == ["label"]  # the outputs filter
    accuracy = float(np.mean(np.asarray(body["outputs"][0]["data"]) == y))
    assert accuracy > 0.9


def test_binary_tensor_extension_round_trip(
    client: Client, digits_model: DigitsModel, reference: ort.InferenceSession
) -> None:
    x, _ = digits_model.load_samples()
    batch = np.ascontiguousarray(x[8:24])
    blob = batch.astype("<f4").tobytes()
    header = json.dumps(
        {
            "id": "bin",
            "inputs": [
                {
                    "name": "input",
                    "shape": list(batch.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "outputs": [
                {"name": "probabilities", "parameters": {"binary_data": True}},
                {"name": "label", "parameters": {"binary_data": False}},
            ],
        }
    ).encode()
    reply = client.call(
        "POST",
        f"/v2/models/{MODEL}/infer",
        header + blob,
        headers={HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert reply.status == 200, reply.body
    json_size = int(reply.headers[HEADER_LENGTH])
    meta = json.loads(reply.body[:json_size])
    probs_meta = next(o for o in meta["outputs"] if o["name"] == "probabilities")
    assert probs_meta["parameters"] == {"binary_data_size": 16 * 10 * 4}
    assert len(reply.body) == json_size + 16 * 10 * 4
    got = _outputs(reply)
    want_labels, want_probs = reference.run(None, {"input": batch})
    np.testing.assert_array_equal(got["probabilities"], want_probs)
    np.testing.assert_array_equal(got["label"], want_labels)


def test_binary_data_output_makes_every_output_binary(
    client: Client, digits_model: DigitsModel
) -> None:
    x, _ = digits_model.load_samples()
    request = _infer_json(x[:2], parameters={"binary_data_output": True})
    reply = client.call("POST", f"/v2/models/{MODEL}/infer", request)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/octet-stream"
    meta = json.loads(reply.body[: int(reply.headers[HEADER_LENGTH])])
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in meta["outputs"])
    assert _outputs(reply)["probabilities"].shape == (2, 10)


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/models/nope", 404),
        ("GET", "/v2/models/nope/ready", 404),
        ("POST", "/v2/models/nope/infer", 404),
        ("GET", f"/v2/models/{MODEL}/versions/9", 404),
        ("GET", "/v2/nothing-here", 404),
        ("GET", f"/v2/models/{MODEL}/infer", 405),
    ],
)
def test_unknown_paths(client: Client, method: str, path: str, status: int) -> None:
    body = _infer_json(np.zeros((1, 64), np.float32)) if method == "POST" else None
    reply = client.call(method, path, body)
    assert reply.status == status
    assert reply.json()["error"]


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (
            {"inputs": [_tensor("input", [2, 63], "FP32", [0] * 126)]},
            "shape [2, 63] does not match the model's [-1, 64]",
        ),
        (
            {"inputs": [_tensor("input", [1, 64], "FP32", [0] * 60)]},
            "data has 60 elements but shape [1, 64] needs 64",
        ),
        (
            {"inputs": [_tensor("input", [1, 64], "INT64", [0] * 64)]},
            "datatype INT64 does not match the model's FP32",
        ),
        (
            {"inputs": [_tensor("pixels", [1, 64], "FP32", [0] * 64)]},
            "'pixels' is not an input of the model",
        ),
        ({"inputs": []}, "non-empty list of inputs"),
        (
            {
                "inputs": [_tensor("input", [1, 64], "FP32", [0] * 64)],
                "outputs": [{"name": "logits"}],
            },
            "'logits' is not an output of the model",
        ),
    ],
)
def test_bad_requests_get_400_with_a_message(
    client: Client, request_body: dict[str, Any], message: str
) -> None:
    reply = client.call("POST", f"/v2/models/{MODEL}/infer", request_body)
    assert reply.status == 400
    assert message in reply.json()["error"]
    # The connection stays usable after an error (keep-alive in step).
    assert client.call("GET", "/v2/health/live").status == 200


def test_gzip_request_body(client: Client, digits_model: DigitsModel) -> None:
    x, _ = digits_model.load_samples()
    body = gzip.compress(json.dumps(_infer_json(x[:3])).encode())
    reply = client.call(
        "POST", f"/v2/models/{MODEL}/infer", body, headers={"Content-Encoding": "gzip"}
    )
    assert reply.status == 200, reply.body
    assert _outputs(reply)["label"].shape == (3,)


def test_invalid_json_and_bad_binary_sizes(client: Client) -> None:
    reply = client.call("POST", f"/v2/models/{MODEL}/infer", b"{not json")
    assert reply.status == 400
    assert "not valid JSON" in reply.json()["error"]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 256},
                }
            ]
        }
    ).encode()
    short = client.call(
        "POST",
        f"/v2/models/{MODEL}/infer",
        header + b"\0" * 100,
        headers={HEADER_LENGTH: str(len(header))},
    )
    assert short.status == 400
    assert "fewer bytes than binary_data_size" in short.json()["error"]


# --- metrics ----------------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{", 1)[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', series))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_metrics_count_requests_and_latency(client: Client) -> None:
    before = client.call("GET", "/metrics")
    assert before.status == 200
    assert before.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = before.body.decode()
    served = {"model": MODEL, "version": "1", "accelerator": "cpu",
              "provider": "CPUExecutionProvider"}  # fmt: skip
    requests = "edgemodel_inference_requests_total"
    ok = _metric(text, requests, **served, code="200")
    bad = _metric(text, requests, **served, code="400")
    errors = _metric(text, "edgemodel_inference_errors_total", **served, code="400")
    count = _metric(text, "edgemodel_inference_duration_seconds_count", **served)
    answered = _metric(text, "edgemodel_request_duration_seconds_count", **served)
    rows = _metric(text, "edgemodel_inference_batch_size_sum", **served)

    good = _infer_json(np.zeros((3, 64), np.float32))
    first = client.call("POST", f"/v2/models/{MODEL}/infer", good, {"X-Request-Id": "abc-1"})
    assert (first.status, first.headers["X-Request-Id"]) == (200, "abc-1")
    second = client.call("POST", f"/v2/models/{MODEL}/infer", good)
    assert second.status == 200 and len(second.headers["X-Request-Id"]) == 32  # made up
    refused = client.call("POST", f"/v2/models/{MODEL}/infer", {"inputs": []})
    assert refused.status == 400 and refused.headers["X-Request-Id"]

    text = client.call("GET", "/metrics").body.decode()
    assert _metric(text, requests, **served, code="200") == ok + 2
    assert _metric(text, requests, **served, code="400") == bad + 1
    assert _metric(text, "edgemodel_inference_errors_total", **served, code="400") == errors + 1
    assert _metric(text, "edgemodel_inference_duration_seconds_count", **served) == count + 2
    assert _metric(text, "edgemodel_request_duration_seconds_count", **served) == answered + 3
    assert _metric(text, "edgemodel_inference_batch_size_sum", **served) == rows + 6
    bucket = "edgemodel_inference_duration_seconds_bucket"
    assert _metric(text, bucket, **served, le="+Inf") == count + 2
    assert _metric(text, "edgemodel_requests_in_flight", **served) == 0
    assert _metric(text, "edgemodel_model_load_seconds", model=MODEL) > 0
    assert _metric(text, "edgemodel_model_ready", model=MODEL) == 1
    assert (
        _metric(
            text,
            "edgemodel_execution_provider",
            model=MODEL,
            accelerator="cpu",
            provider="CPUExecutionProvider",
            fallback="false",
        )
        == 1
    )
    assert "# TYPE edgemodel_inference_duration_seconds histogram" in text


def test_failed_inferences_are_logged_as_json_with_their_request_id(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    from edgemodel_server.logs import JsonFormatter

    with caplog.at_level("DEBUG", logger="edgemodel_server"):
        answer = client.call("POST", f"/v2/models/{MODEL}/infer", {"inputs": []},
                             {"X-Request-Id": "req-42"})  # fmt: skip
    assert answer.status == 400
    (record,) = [r for r in caplog.records if getattr(r, "request_id", None) == "req-42"]
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["code"] == 400 and line["model"] == MODEL
    assert line["message"] == "Answered inference req-42 with 400"
    assert line["request_id"] == "req-42" and line["time"].endswith("+00:00")


# --- provider selection (pure) ------------------------------------------------------------

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
WITH_CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
WITH_TRT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
WITH_OPENVINO = ["OpenVINOExecutionProvider", "CPUExecutionProvider"]
CUDA_MISSING = (
    "CUDAExecutionProvider is not available in this onnxruntime build; "
    "set EDGEMODEL_CPU_FALLBACK=true to serve on CPU"
)


@pytest.mark.parametrize(
    ("accelerator", "available", "fallback", "providers_or_reason", "fell_back"),
    [
        ("cpu", CPU_ONLY, False, ("CPUExecutionProvider",), False),
        ("gpu", WITH_TRT, False, tuple(WITH_TRT), False),
        ("gpu", WITH_CUDA, False, tuple(WITH_CUDA), False),
        ("gpu", CPU_ONLY, False, CUDA_MISSING, False),
        ("gpu", CPU_ONLY, True, ("CPUExecutionProvider",), True),
        ("npu", WITH_OPENVINO, False, tuple(WITH_OPENVINO), False),
        (
            "npu",
            CPU_ONLY,
            False,
            "OpenVINOExecutionProvider is not available in this onnxruntime build; "
            "set EDGEMODEL_CPU_FALLBACK=true to serve on CPU",
            False,
        ),
        ("npu", WITH_CUDA, True, ("CPUExecutionProvider",), True),
    ],
)
def test_provider_choice(
    accelerator: str,
    available: list[str],
    fallback: bool,
    providers_or_reason: tuple[str, ...] | str,
    fell_back: bool,
) -> None:
    choice = providers.choose(accelerator, available, fallback)
    if isinstance(providers_or_reason, str):
        assert isinstance(choice, providers.Unavailable)
        assert choice.reason == providers_or_reason
        return
    assert isinstance(choice, providers.Selected)
    assert choice.providers == providers_or_reason
    assert choice.fell_back is fell_back
    if fell_back:
        assert "fell back to CPUExecutionProvider" in choice.note
        assert "EDGEMODEL_CPU_FALLBACK=true" in choice.note
    if accelerator == "npu" and not fell_back:
        assert choice.options[0] == {"device_type": "NPU"}


def test_provider_confirm_catches_a_silently_dropped_provider() -> None:
    choice = providers.choose("gpu", WITH_CUDA, cpu_fallback=False)
    assert isinstance(choice, providers.Selected)
    assert providers.confirm(choice, WITH_CUDA, cpu_fallback=False) == choice
    dropped = providers.confirm(choice, ["CPUExecutionProvider"], cpu_fallback=False)
    assert isinstance(dropped, providers.Unavailable)
    assert "could not be initialised" in dropped.reason
    kept = providers.confirm(choice, ["CPUExecutionProvider"], cpu_fallback=True)
    assert isinstance(kept, providers.Selected) and kept.fell_back


needs_no_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this onnxruntime build has CUDA; the fallback is tested where it does not",
)


@needs_no_cuda
def test_gpu_without_cuda_is_not_ready_and_says_why(digits_model: DigitsModel) -> None:
    server, thread = _start(_config(digits_model.model, accelerator="gpu"))
    c = Client(server.port)
    try:
        assert c.call("GET", "/v2/health/live").status == 200
        ready = c.call("GET", "/v2/health/ready")
        assert (ready.status, ready.json()) == (503, {"error": CUDA_MISSING})
        assert c.call("GET", f"/v2/models/{MODEL}/ready").status == 503
        infer = c.call("POST", f"/v2/models/{MODEL}/infer", _infer_json(np.zeros((1, 64))))
        assert (infer.status, infer.json()["error"]) == (503, CUDA_MISSING)
        metrics = c.call("GET", "/metrics").body.decode()
        assert _metric(metrics, "edgemodel_model_ready", model=MODEL) == 0
    finally:
        c.close()
        drain(server, 1.0)
        thread.join(timeout=5)


@needs_no_cuda
def test_gpu_with_cpu_fallback_serves_on_cpu_and_says_so(digits_model: DigitsModel) -> None:
    server, thread = _start(_config(digits_model.model, accelerator="gpu", cpu_fallback=True))
    c = Client(server.port)
    try:
        assert c.call("GET", "/v2/health/ready").status == 200
        params = c.call("GET", f"/v2/models/{MODEL}").json()["parameters"]
        assert params["execution_provider"] == "CPUExecutionProvider"
        assert params["cpu_fallback"] is True
        assert "fell back to CPUExecutionProvider" in params["note"]
        metrics = c.call("GET", "/metrics").body.decode()
        gauge = _metric(
            metrics,
            "edgemodel_execution_provider",
            accelerator="gpu",
            provider="CPUExecutionProvider",
            fallback="true",
        )
        assert gauge == 1
    finally:
        c.close()
        drain(server, 1.0)
        thread.join(timeout=5)


def test_missing_model_file_is_not_ready(tmp_path: Path) -> None:
    server, thread = _start(_config(tmp_path / "absent.onnx"))
    c = Client(server.port)
    try:
        ready = c.call("GET", "/v2/health/ready")
        assert ready.status == 503
        assert "no model file at" in ready.json()["error"]
    finally:
        c.close()
        drain(server, 1.0)
        thread.join(timeout=5)


# --- configuration and process ------------------------------------------------------------


def test_config_defaults_and_errors() -> None:
    config = load_config({})
    assert (config.model_path, config.port, config.host) == (
        Path("/models/model.onnx"),
        8080,
        "127.0.0.1",
    )
    assert (config.accelerator, config.cpu_fallback) == ("cpu", False)
    assert load_config({"EDGEMODEL_CPU_FALLBACK": "True"}).cpu_fallback is True
    for env, variable in [
        ({"EDGEMODEL_ACCELERATOR": "tpu"}, "EDGEMODEL_ACCELERATOR"),
        ({"EDGEMODEL_PORT": "80a"}, "EDGEMODEL_PORT"),
        ({"EDGEMODEL_CPU_FALLBACK": "maybe"}, "EDGEMODEL_CPU_FALLBACK"),
        ({"EDGEMODEL_MODEL_NAME": "a/b"}, "EDGEMODEL_MODEL_NAME"),
    ]:
        with pytest.raises(ConfigError, match=variable):
            load_config(env)


def test_entry_point_serves_and_stops_on_sigterm(digits_model: DigitsModel) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(SERVER_SRC),
        "EDGEMODEL_MODEL_NAME": MODEL,
        "EDGEMODEL_MODEL_PATH": str(digits_model.model),
        "EDGEMODEL_HOST": "127.0.0.1",
        "EDGEMODEL_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgemodel_server"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        port = 0
        deadline = time.monotonic() + 20
        while not port and time.monotonic() < deadline:
            line = proc.stderr.readline()
            found = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else 0
        assert port, "the server did not report its port"
        c = Client(port)
        while c.call("GET", "/v2/health/ready").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "Stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- a standard client ------------------------------------------------------------------


def test_tritonclient_infers_unchanged(
    running: ModelServer, digits_model: DigitsModel, reference: ort.InferenceSession
) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    x, _ = digits_model.load_samples()
    batch = x[:8]
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{running.port}")
    try:
        assert triton.is_server_live()
        assert triton.is_server_ready()
        assert triton.is_model_ready(MODEL)
        assert triton.get_model_metadata(MODEL)["inputs"][0]["shape"] == [-1, 64]
        want_labels, want_probs = reference.run(None, {"input": batch})
        for binary in (True, False):
            tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch, binary_data=binary)
            outputs = [
                httpclient.InferRequestedOutput("probabilities", binary_data=binary),
                httpclient.InferRequestedOutput("label", binary_data=not binary),
            ]
            result = triton.infer(MODEL, [tensor], outputs=outputs, request_id="t1")
            np.testing.assert_allclose(result.as_numpy("probabilities"), want_probs, rtol=1e-6)
            np.testing.assert_array_equal(result.as_numpy("label"), want_labels)
            assert result.get_response()["id"] == "t1"
        # No outputs named: tritonclient asks for every output in binary.
        tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = triton.infer(MODEL, [tensor], model_version="1")
        np.testing.assert_array_equal(result.as_numpy("label"), want_labels)
    finally:
        triton.close()
