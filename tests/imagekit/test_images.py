"""The image builder end to end: podman's Docker API, a real registry, a real model.

Builds the cpu image of the digits model (int8) from the local Debian base, smoke-tests
and pushes it, finds it again without building, runs the pushed image by digest against
the host's onnxruntime, ships a new model version as one changed layer, and refuses a
broken model. Timings and sizes are printed at the end of the run.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import digits
import make_digits
import numpy as np
import onnxruntime as ort
import pytest
import requests
from imagekit_support import IMAGES, KIT, Kit, record, report

from edgemodel_operator.adapters.image_errors import BuildFailed, RegistryError, SmokeTestFailed
from edgemodel_operator.adapters.images import BuildRequest, BuiltImage, ImageBuilder, Registry
from edgemodel_operator.optimize import Variant, load_samples, optimize


def request_for(
    kit: Kit, model: Path, *, name: str, version: str, tag: str, sample: Any = None
) -> BuildRequest:
    return BuildRequest(
        model_file=model,
        model_name="digits",
        model_version=version,
        accelerator="cpu",
        precision="int8",
        repository=kit.repository(name),
        tag=tag,
        base_image=kit.base_image,
        context_dir=IMAGES,
        sample_input=sample,
        wheels_dir=kit.wheels,
    )


def one_sample(samples: Path) -> dict[str, Any]:
    with np.load(samples) as data:
        row = data["X"][0].astype(np.float32)
    return {
        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]
    }


class Built:
    """The first image of the session, shared by the tests that inspect it."""

    def __init__(self, image: BuiltImage, request: BuildRequest, lines: list[str]) -> None:
        self.image = image
        self.request = request
        self.lines = lines


@pytest.fixture(scope="module")
def first(
    imagekit: Kit, builder: ImageBuilder, int8_model: Variant, digits_model: digits.DigitsModel
) -> Built:
    request = request_for(
        imagekit,
        int8_model.path,
        name="digits",
        version="1",
        tag=f"cpu-int8-{int8_model.sha256[:12]}",
        sample=one_sample(digits_model.samples),
    )
    lines: list[str] = []
    started = time.monotonic()
    image = builder.ensure(request, lines.append)
    record("ensure: build + smoke test + push (digits int8, cpu)", time.monotonic() - started)
    return Built(image, request, lines)


def test_first_ensure_builds_smoke_tests_and_pushes(first: Built, builder: ImageBuilder) -> None:
    assert first.image.built
    assert any("STEP" in line and "COPY model.onnx" in line for line in first.lines), first.lines
    assert any(line.startswith("Smoke test: passed") for line in first.lines), first.lines
    assert first.image.digest.startswith("sha256:")
    assert first.image.reference == f"{first.request.repository}@{first.image.digest}"
    # The digest resolves in the registry, to the same manifest the tag names.
    by_digest = builder.registry.manifest(first.request.repository, first.image.digest)
    assert by_digest is not None and by_digest.digest == first.image.digest
    assert first.image.size_bytes == by_digest.size_bytes > 10_000_000
    local = builder.client.images.get(first.request.reference)
    report(
        f"cpu image (digits int8): {local.attrs['Size'] / 1e6:.1f} MB uncompressed, "
        f"{first.image.size_bytes / 1e6:.1f} MB compressed in {len(by_digest.layers)} layers"
    )


def test_second_ensure_finds_the_tag_and_builds_nothing(
    first: Built, builder: ImageBuilder
) -> None:
    lines: list[str] = []
    started = time.monotonic()
    again = builder.ensure(first.request, lines.append)
    elapsed = time.monotonic() - started
    record("ensure again: tag already in the registry", elapsed)
    assert not again.built
    assert (again.digest, again.reference, again.size_bytes) == (
        first.image.digest,
        first.image.reference,
        first.image.size_bytes,
    )
    assert len(lines) == 1 and "already in the registry" in lines[0], lines
    assert elapsed < 2.0


@pytest.fixture
def container_by_digest(first: Built, builder: ImageBuilder) -> Iterator[str]:
    """The pushed image, pulled and run by digest on a free port; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    container = builder.client.containers.run(
        first.image.reference, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, container.logs().decode()
            time.sleep(0.1)
        record("run the pushed image by digest until ready", time.monotonic() - started)
        yield base
    finally:
        container.remove(force=True)


def test_pushed_image_answers_like_onnxruntime_on_the_host(
    container_by_digest: str, int8_model: Variant, digits_model: digits.DigitsModel
) -> None:
    x, y = digits_model.load_samples()
    batch = x[:8]
    body = {
        "inputs": [
            {"name": "input", "shape": [8, 64], "datatype": "FP32", "data": batch.ravel().tolist()}
        ]
    }
    answer = requests.post(f"{container_by_digest}/v2/models/digits/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    session = ort.InferenceSession(str(int8_model.path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"input": batch})
    assert outputs["label"]["data"] == labels.tolist()
    np.testing.assert_allclose(
        np.asarray(outputs["probabilities"]["data"]).reshape(8, 10), probabilities, atol=1e-5
    )
    assert (labels == y[:8]).mean() >= 0.75  # and the model is a real classifier


def retrained(out: Path, seed: int) -> Path:
    """The digits model retrained with another random_state: a new model version."""
    make_digits.generate(out, seed)
    return out / make_digits.MODEL_FILE


def test_model_only_update_changes_only_the_last_layer(
    first: Built,
    builder: ImageBuilder,
    imagekit: Kit,
    digits_model: digits.DigitsModel,
    tmp_path: Path,
) -> None:
    source = retrained(tmp_path / "v2", seed=1)
    samples = load_samples(digits_model.samples)
    variant = optimize(source, "int8", tmp_path / "v2-int8", samples.head(100))
    request = request_for(
        imagekit, variant.path, name="digits", version="2", tag=f"cpu-int8-{variant.sha256[:12]}"
    )
    assert request.tag != first.request.tag
    started = time.monotonic()
    second = builder.ensure(request, lambda line: None)
    record("ensure: model-only update (version 2, cached layers)", time.monotonic() - started)
    assert second.built and second.digest != first.image.digest
    old = builder.registry.manifest(first.request.repository, first.image.digest)
    new = builder.registry.manifest(request.repository, second.digest)
    assert old is not None and new is not None
    assert len(old.layers) == len(new.layers)
    assert [layer.digest for layer in old.layers[:-1]] == [
        layer.digest for layer in new.layers[:-1]
    ]
    assert old.layers[-1].digest != new.layers[-1].digest
    report(
        f"model-only update: the last layer is {new.layers[-1].size / 1e3:.1f} kB of "
        f"{new.size_bytes / 1e6:.1f} MB compressed ({new.layers[-1].size / new.size_bytes:.3%}); "
        f"the other {len(new.layers) - 1} layers are shared"
    )


def test_broken_model_fails_the_smoke_test_and_is_not_pushed(
    first: Built, builder: ImageBuilder, imagekit: Kit, int8_model: Variant, tmp_path: Path
) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(int8_model.path.read_bytes()[: int8_model.size_bytes // 2])
    request = request_for(imagekit, broken, name="digits", version="3", tag="cpu-int8-broken")
    started = time.monotonic()
    with pytest.raises(SmokeTestFailed) as failure:
        builder.ensure(request, lambda line: None)
    record("ensure: broken model refused by the smoke test", time.monotonic() - started)
    message = str(failure.value)
    assert "did not become ready" in message and "could not load" in message, message
    assert failure.value.logs, "the error carries the container's last log lines"
    assert builder.registry.manifest(request.repository, request.tag) is None
    # Nor is it left behind locally, ready to be pushed by mistake.
    assert not builder.client.images.list(name=request.reference)


def test_missing_wheels_say_how_to_get_them(
    builder: ImageBuilder, imagekit: Kit, int8_model: Variant, tmp_path: Path
) -> None:
    request = request_for(imagekit, int8_model.path, name="digits", version="1", tag="npu-x")
    request = dataclasses.replace(request, accelerator="npu", wheels_dir=tmp_path)
    with pytest.raises(BuildFailed, match=r"imagekit.py wheels npu"):
        builder.ensure(request, lambda line: None)


def test_imagekit_names_a_taken_port_and_a_missing_prerequisite(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "IMAGEKIT_STATE": str(tmp_path / "kit"),
            "IMAGEKIT_REGISTRY_PORT": str(port),
        }
        result = subprocess.run(
            [sys.executable, str(KIT), "up"], env=env, text=True, capture_output=True, check=False
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr, result.stderr
    assert not (tmp_path / "kit").exists()
    env = {**os.environ, "IMAGEKIT_STATE": str(tmp_path / "kit"), "PATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(KIT), "up"], env=env, text=True, capture_output=True, check=False
    )
    assert result.returncode == 1
    assert "podman, runc, iptables, docker-registry not found" in result.stderr, result.stderr
    assert "hack/install-deps.sh" in result.stderr


def test_unreachable_docker_api_and_registry_are_named(
    imagekit: Kit, int8_model: Variant, tmp_path: Path
) -> None:
    request = request_for(imagekit, int8_model.path, name="digits", version="1", tag="nowhere")
    missing = tmp_path / "no.sock"
    lost = ImageBuilder(f"unix://{missing}", registry_insecure=True)
    with pytest.raises(BuildFailed, match=rf"Could not reach the Docker API at unix://{missing}"):
        lost.ensure(request, lambda line: None)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    registry = Registry(insecure=True, timeout=2)
    with pytest.raises(
        RegistryError, match=rf"Could not reach the registry at http://127.0.0.1:{port}/"
    ):
        registry.manifest(f"127.0.0.1:{port}/edgemodels/digits", "v1")
