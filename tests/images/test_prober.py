"""The operator's active probe against the real model server: a healthy server passes; a
server whose provider is missing, a wrong model name and nothing listening each fail with
what was seen."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from digits import DigitsModel
from test_server import MODEL, _config, _start

from edgemodel_operator.adapters.prober import probe
from edgemodel_server.app import ModelServer, drain


@pytest.fixture(scope="module")
def healthy(digits_model: DigitsModel) -> Iterator[ModelServer]:
    server, thread = _start(_config(digits_model.model))
    yield server
    drain(server, 2.0)
    thread.join(timeout=5)


def test_a_healthy_server_answers_readiness_and_an_inference(healthy: ModelServer) -> None:
    assert probe("127.0.0.1", healthy.port, MODEL, timeout=5) is None


def test_a_wrong_model_name_fails_with_the_answer(healthy: ModelServer) -> None:
    failed = probe("127.0.0.1", healthy.port, "nope", timeout=5)
    assert failed is not None and "/v2/models/nope answered 404" in failed


def test_a_server_without_its_provider_is_not_ready(digits_model: DigitsModel) -> None:
    server, thread = _start(_config(digits_model.model, accelerator="gpu"))
    try:
        failed = probe("127.0.0.1", server.port, MODEL, timeout=5)
    finally:
        drain(server, 2.0)
        thread.join(timeout=5)
    assert failed is not None and "/v2/health/ready answered 503" in failed


def test_nothing_listening_is_a_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    failed = probe("127.0.0.1", port, MODEL, timeout=2)
    assert failed is not None and "ConnectionError" in failed
