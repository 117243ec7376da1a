"""The operator's Open Inference Protocol checks (the active probe, the smoke test) against
the real model server: a healthy server passes; a server whose provider is missing, a
wrong model name, nothing listening, a model that fails every inference and one whose
answers do not have the shape it declares each fail with what was seen."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import broken
import pytest
from digits import DigitsModel
from test_server import MODEL, _config, _start

from edgemodel_operator.adapters.oip import output_problems, probe, probe_many
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


def test_a_model_that_fails_every_inference_fails_with_the_answer(tmp_path: Path) -> None:
    server, thread = _start(_config(broken.failing_model(tmp_path / "m.onnx")))
    try:
        failed = probe("127.0.0.1", server.port, MODEL, timeout=5)
    finally:
        drain(server, 2.0)
        thread.join(timeout=5)
    assert failed is not None and failed.startswith("an inference answered 500")


def test_a_model_answering_another_shape_than_it_declares_fails(tmp_path: Path) -> None:
    server, thread = _start(_config(broken.misshaped_model(tmp_path / "m.onnx")))
    try:
        failed = probe("127.0.0.1", server.port, MODEL, timeout=5)
    finally:
        drain(server, 2.0)
        thread.join(timeout=5)
    assert failed == (
        "an inference answered wrongly: output probabilities has shape [1, 5], declared [-1, 10]"
    )


def test_output_problems_name_each_difference() -> None:
    meta = {"outputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 10]},
                        {"name": "b", "datatype": "INT64", "shape": [1]}]}  # fmt: skip
    got = [{"name": "a", "datatype": "FP16", "shape": [3, 10]}, {"name": "c", "shape": [1]}]
    assert output_problems(meta, got) == [
        "output b is missing",
        "output a has datatype FP16, declared FP32",
        "output c is not declared by the model",
    ]


def test_many_pods_are_probed_in_parallel(healthy: ModelServer) -> None:
    answers = probe_many({"p1": "127.0.0.1", "p2": "127.0.0.1"}, healthy.port, MODEL, 5)
    assert answers == {"p1": None, "p2": None}
