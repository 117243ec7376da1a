"""The model-fetching init container (edgemodel_server.fetch) and the server's exit on a
model it can never load: what a pod without a built image relies on."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgemodel_server import fetch

SERVER_SRC = Path(__file__).resolve().parents[2] / "images" / "server"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A model store over HTTP on 127.0.0.1: (base URL, the folder it serves)."""
    root = tmp_path / "store"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _run(env: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    log = tmp_path / "termination-log"
    proc = subprocess.run(
        [sys.executable, "-m", "edgemodel_server.fetch"],
        env={**os.environ, "PYTHONPATH": str(SERVER_SRC),
             "EDGEMODEL_TERMINATION_LOG": str(log), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.returncode, log.read_text() if log.exists() else ""


def test_fetches_verifies_and_keeps_a_verified_file(
    store: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = store
    data = b"an onnx model, byte for byte"
    (root / "model.onnx").write_bytes(data)
    dest = tmp_path / "models" / "model.onnx"
    request = fetch.Request(f"{url}/model.onnx", hashlib.sha256(data).hexdigest(), dest)
    fetch.fetch(request)
    assert dest.read_bytes() == data
    (root / "model.onnx").unlink()  # a restarted pod keeps the verified copy
    fetch.fetch(request)
    assert dest.read_bytes() == data


def test_a_wrong_digest_is_refused_and_nothing_is_left(
    store: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = store
    (root / "model.onnx").write_bytes(b"tampered")
    dest = tmp_path / "models" / "model.onnx"
    code, message = _run(
        {"EDGEMODEL_MODEL_URI": f"{url}/model.onnx", "EDGEMODEL_MODEL_SHA256": "ab" * 32,
         "EDGEMODEL_MODEL_PATH": str(dest)}, tmp_path,
    )  # fmt: skip
    assert code == 3
    assert message.startswith("ModelDigestMismatch: ")
    assert hashlib.sha256(b"tampered").hexdigest() in message and "ab" * 32 in message
    assert not dest.exists() and not list(dest.parent.iterdir())


def test_a_missing_model_fails_at_once_with_the_answer(
    store: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = store
    slept: list[float] = []
    request = fetch.Request(f"{url}/absent.onnx", "00" * 32, tmp_path / "m" / "model.onnx")
    with pytest.raises(fetch.FetchFailed, match="HTTP 404") as err:
        fetch.fetch(request, sleep=slept.append)
    assert not err.value.retry and slept == []  # a 404 stays a 404: no retries


def test_an_unreachable_store_is_retried_then_reported(tmp_path: Path) -> None:
    slept: list[float] = []
    request = fetch.Request("http://127.0.0.1:9/model.onnx", "00" * 32, tmp_path / "model.onnx")
    with pytest.raises(fetch.FetchFailed, match="could not download"):
        fetch.fetch(request, sleep=slept.append)
    assert slept == list(fetch.BACKOFF_SECONDS)


def test_bad_configuration_is_named(tmp_path: Path) -> None:
    code, message = _run({"EDGEMODEL_MODEL_URI": "s3://bucket/m", "EDGEMODEL_MODEL_SHA256": ""},
                         tmp_path)  # fmt: skip
    assert code == 2 and "EDGEMODEL_MODEL_URI" in message


def test_the_server_exits_on_a_model_it_cannot_load(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    log = tmp_path / "termination-log"
    proc = subprocess.run(
        [sys.executable, "-m", "edgemodel_server"],
        env={**os.environ, "PYTHONPATH": str(SERVER_SRC), "EDGEMODEL_MODEL_PATH": str(broken),
             "EDGEMODEL_PORT": "0", "EDGEMODEL_TERMINATION_LOG": str(log)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert log.read_text().startswith(f"ModelLoadFailed: onnxruntime could not load {broken}")
