"""The server's process model: the event loop on one connection (pipelining, 100-continue,
many connections at once) and several worker processes sharing one port."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from digits import DigitsModel

from edgemodel_server.app import ModelServer, create_server, drain
from edgemodel_server.config import ConfigError, ServerConfig, load_config
from edgemodel_server.cpus import usable_cpus

SERVER_SRC = Path(__file__).resolve().parents[2] / "images" / "server"
MODEL = "digits"


def _body(x: np.ndarray) -> bytes:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32",
              "data": x.ravel().tolist()}  # fmt: skip
    return json.dumps({"inputs": [tensor], "outputs": [{"name": "label"}]}).encode()


def _request(body: bytes, extra: str = "") -> bytes:
    head = (f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: t\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n")  # fmt: skip
    return head.encode() + body


def _read_answers(sock: socket.socket, count: int) -> list[dict[str, object]]:
    data, answers = b"", []
    sock.settimeout(10)
    while len(answers) < count:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
        while b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            if len(rest) < length:
                break
            assert head.startswith(b"HTTP/1.1 200"), head
            answers.append(json.loads(rest[:length]))
            data = rest[length:]
    return answers


@pytest.fixture(scope="module")
def server(digits_model: DigitsModel) -> Iterator[ModelServer]:
    config = ServerConfig(MODEL, digits_model.model, "1", "cpu", False, "127.0.0.1", 0)
    srv = create_server(config)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    deadline = time.monotonic() + 20
    while srv.model.ready_reason() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield srv
    drain(srv, 2.0)
    thread.join(timeout=5)


def test_pipelined_requests_are_answered_in_order(
    server: ModelServer, digits_model: DigitsModel
) -> None:
    x, y = digits_model.load_samples()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"".join(_request(_body(x[i : i + 1])) for i in range(5)))
        answers = _read_answers(sock, 5)
    labels = [a["outputs"][0]["data"][0] for a in answers]  # type: ignore[index]
    want = y[:5]
    assert np.mean(np.array(labels) == want) >= 0.8  # the model's answers, in request order
    assert labels == [_label(server, x[i : i + 1]) for i in range(5)]


def _label(server: ModelServer, row: np.ndarray) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", f"/v2/models/{MODEL}/infer", _body(row))
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return int(answer["outputs"][0]["data"][0])


def test_expect_100_continue_then_the_body(server: ModelServer, digits_model: DigitsModel) -> None:
    x, _ = digits_model.load_samples()
    request = _request(_body(x[:1]), "Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        sock.sendall(head + b"\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        (answer,) = _read_answers(sock, 1)
    assert answer["model_name"] == MODEL


def test_many_connections_at_once_all_get_answers(
    server: ModelServer, digits_model: DigitsModel
) -> None:
    x, _ = digits_model.load_samples()
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(16)]
    try:
        for i, sock in enumerate(socks):  # half a request first, the rest after the others
            request = _request(_body(x[i : i + 1]))
            sock.sendall(request[:40])
        for i, sock in enumerate(socks):
            sock.sendall(_request(_body(x[i : i + 1]))[40:])
        for i, sock in enumerate(socks):
            (answer,) = _read_answers(sock, 1)
            assert answer["outputs"][0]["data"][0] == _label(server, x[i : i + 1])  # type: ignore[index]
    finally:
        for sock in socks:
            sock.close()


def test_worker_settings() -> None:
    assert load_config({}).workers == usable_cpus() >= 1  # auto: a process per core on CPU
    assert load_config({"EDGEMODEL_ACCELERATOR": "gpu"}).workers == 1
    assert load_config({"EDGEMODEL_WORKERS": "1"}).workers == 1
    assert load_config({"EDGEMODEL_WORKERS": "3"}).workers == 3
    for bad in ("0", "many", "999"):
        with pytest.raises(ConfigError, match="EDGEMODEL_WORKERS"):
            load_config({"EDGEMODEL_WORKERS": bad})
    worker = load_config({"EDGEMODEL_WORKER_INDEX": "1"})
    assert (worker.reuse_port, worker.worker) == (True, "1")


def test_usable_cpus_follows_the_cgroup_quota(tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")
    assert usable_cpus(quota) == 1
    quota.write_text("max 100000\n")
    assert usable_cpus(quota) == len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _start_workers(digits_model: DigitsModel, **extra: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(SERVER_SRC), "EDGEMODEL_MODEL_NAME": MODEL,
           "EDGEMODEL_MODEL_PATH": str(digits_model.model), "EDGEMODEL_PORT": "0",
           "EDGEMODEL_WORKERS": "2", **extra}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "edgemodel_server"], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    # The supervisor reports once one worker listens; each worker reports its own start.
    port, serving, deadline = 0, 0, time.monotonic() + 20
    while (not port or serving < 2) and time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"on http://127\.0\.0\.1:(\d+)( with 2 worker)?", line)
        if found and found.group(2):
            port = int(found.group(1))
        elif found:
            serving += 1
    assert port, "the supervisor did not report its port"
    assert serving == 2, "a worker did not report that it serves"
    # A worker takes connections only once its model is loaded: from the moment the port
    # answers, every fresh connection, whichever worker the kernel gives it to, is ready.
    for _ in range(20):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v2/health/ready")
        assert conn.getresponse().status == 200, "a connection reached a worker still loading"
        conn.close()
    return proc, port


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def test_workers_share_the_port_and_stop_together(digits_model: DigitsModel) -> None:
    proc, port = _start_workers(digits_model, EDGEMODEL_LOG_LEVEL="DEBUG")
    try:
        workers = _children(proc.pid)
        assert len(workers) == 2
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                       "data": [0.0] * 64}]})  # fmt: skip
        sent = 40
        for _ in range(sent):  # a fresh connection each: the kernel picks a worker for each
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", f"/v2/models/{MODEL}/infer", body)
            assert conn.getresponse().status == 200
            conn.close()
        # Whichever worker answers a scrape sums both workers' figures.
        total = 'edgemodel_inference_requests_total{.*code="200".*} (\\S+)'
        for _ in range(6):
            counted = [float(v) for v in re.findall(total, _get(port, "/metrics"))]
            assert sum(counted) == sent, counted
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.strip()]
        answered = [e["process"] for e in lines if e["message"].startswith("Answered inference")]
        assert len(answered) == sent
        assert set(answered) == set(workers), "the kernel spread connections over both workers"
        assert lines[-1]["message"] == "Stopped"
        assert not [w for w in workers if Path(f"/proc/{w}").exists()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_dying_worker_takes_the_others_down(digits_model: DigitsModel) -> None:
    proc, _ = _start_workers(digits_model)
    try:
        first, second = _children(proc.pid)
        os.kill(first, signal.SIGKILL)
        assert proc.wait(timeout=15) != 0
        deadline = time.monotonic() + 10
        while Path(f"/proc/{second}/stat").exists() and "Z" not in _state(second):
            assert time.monotonic() < deadline, "the other worker kept running"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
