"""The image pipeline with a fake builder: registry hits skip everything, a wrong sha256 and
a failed accuracy gate are terminal, other failures are retried with backoff."""

from __future__ import annotations

import errno
import hashlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgemodel_operator.adapters.image_errors import PushFailed
from edgemodel_operator.adapters.model_images import BuiltImage, ModelImageRequest, PlatformImage
from edgemodel_operator.config import BuildConfig
from edgemodel_operator.optimize import Variant as Variant_
from edgemodel_operator.reconcile.images import Variant, image_tag
from edgemodel_operator.services import images as images_service
from edgemodel_operator.services.images import ImageJob, ImagePipeline, ImageState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
import digits

SERVER_DIGEST = "sha256:" + "5" * 64
PLATFORMS = (PlatformImage("amd64", "sha256:" + "1" * 64, "passed on CPUExecutionProvider"),)


class FakeBuilder:
    def __init__(self, fail: Exception | None = None, known: bool = False) -> None:
        self.fail, self.known, self.requests = fail, known, list[ModelImageRequest]()

    def build(self, request: ModelImageRequest, progress: Callable[[str], None]) -> BuiltImage:
        self.requests.append(request)
        progress("Appending the model")
        if self.fail:
            raise self.fail
        return BuiltImage(f"{request.repository}@sha256:{'a' * 64}", "sha256:" + "a" * 64, 42,
                          PLATFORMS, True)  # fmt: skip

    def find(self, repository: str, tag: str) -> BuiltImage | None:
        digest = "sha256:" + "b" * 64
        return (
            BuiltImage(f"{repository}@{digest}", digest, 7, PLATFORMS, False)
            if self.known
            else None
        )

    def server_digest(self, server_image: str) -> str:
        assert server_image == "reg.local:5000/edgemodel-server:0.1.0-cpu"
        return SERVER_DIGEST


def config(tmp: Path) -> BuildConfig:
    return BuildConfig("registry", "reg.local:5000", True, "", str(tmp / "work"))


def pipeline_for(tmp: Path, builder: FakeBuilder, **kw: Any) -> ImagePipeline:
    server = "reg.local:5000/edgemodel-server:0.1.0-{accelerator}"
    return ImagePipeline(config(tmp), builder, server, **kw)


def settle(pipeline: ImagePipeline, job: ImageJob) -> ImageState:
    deadline = time.monotonic() + 60
    state = pipeline.state(job)
    while state.state == "Building" and time.monotonic() < deadline:
        time.sleep(0.05)
        state = pipeline.state(job)
    return state


@pytest.fixture(scope="module")
def model() -> digits.DigitsModel:
    return digits.build()


def job(model: digits.DigitsModel, sha: str | None = None, drop: float = 0.05) -> ImageJob:
    real = hashlib.sha256(model.model.read_bytes()).hexdigest()
    return ImageJob("line-3", "digits", model.model.as_uri(), sha or real, "1",
                    Variant("cpu", "int8"), model.samples.as_uri(), drop)  # fmt: skip


def test_builds_the_gated_variant_with_a_content_tag(
    model: digits.DigitsModel, tmp_path: Path
) -> None:
    builder = FakeBuilder()
    state = settle(pipeline_for(tmp_path, builder), job(model))
    assert (state.state, state.size_bytes) == ("Ready", 42)
    # The variant's figures for status.images[]: bytes, latency on the CPU provider, gate.
    assert state.model is not None
    assert state.model["method"] == "int8-static-qdq"
    assert 0 < state.model["modelBytes"] < state.model["fp32ModelBytes"]
    assert state.model["latency"]["provider"] == "CPUExecutionProvider"
    assert state.model["latency"]["p50Ms"] > 0
    gate = state.model["validation"]
    assert (gate["mode"], gate["metric"], gate["passed"]) == ("labels", "accuracy", True)
    assert gate["samples"] == 450 - 225  # half of the rows calibrated, the other half scored
    assert state.reference == f"reg.local:5000/line-3/digits@sha256:{'a' * 64}"
    assert state.platforms == (("amd64", "passed on CPUExecutionProvider"),)
    (request,) = builder.requests
    assert request.model_file.name == "model-int8.onnx"
    assert request.server_image == "reg.local:5000/edgemodel-server:0.1.0-cpu"
    assert request.tag == image_tag(job(model).sha256, Variant("cpu", "int8"), SERVER_DIGEST)


def test_an_image_already_in_the_registry_is_not_built(
    model: digits.DigitsModel, tmp_path: Path
) -> None:
    builder = FakeBuilder(known=True)
    state = settle(pipeline_for(tmp_path, builder), job(model, sha="f" * 64))
    assert state.state == "Ready" and state.reference.endswith("b" * 64)
    assert builder.requests == []  # nothing fetched, nothing built


def test_wrong_digest_is_terminal(model: digits.DigitsModel, tmp_path: Path) -> None:
    state = settle(pipeline_for(tmp_path, FakeBuilder()), job(model, sha="0" * 64))
    assert (state.state, state.reason, state.terminal) == ("Failed", "ModelDigestMismatch", True)
    assert "nothing was built" in state.message


def test_failed_accuracy_gate_is_terminal_with_figures(
    model: digits.DigitsModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def damaging_optimize(
        source: Path, precision: str, out: Path, samples: Any, **_: Any
    ) -> Variant_:
        """A variant whose weights are all zero: it loads and answers, but wrongly."""
        onnx_model = onnx.load(str(source))
        for init in onnx_model.graph.initializer:
            array = numpy_helper.to_array(init)
            if array.dtype.kind == "f":
                init.CopyFrom(numpy_helper.from_array(np.zeros_like(array), init.name))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"model-{precision}.onnx"
        onnx.save(onnx_model, str(path))
        return Variant_(precision, "copy", path, "", path.stat().st_size)

    monkeypatch.setattr(images_service, "optimize", damaging_optimize)
    builder = FakeBuilder()
    state = settle(pipeline_for(tmp_path, builder), job(model))
    assert (state.state, state.reason, state.terminal) == ("Failed", "AccuracyGateFailed", True)
    assert "int8 accuracy 0." in state.message and "exceeds 0.050" in state.message
    assert builder.requests == []


def test_other_failures_are_retried_with_backoff(model: digits.DigitsModel, tmp_path: Path) -> None:
    now = [0.0]
    builder = FakeBuilder(fail=PushFailed("registry said 500"))
    pipeline = pipeline_for(tmp_path, builder, clock=lambda: now[0])
    state = settle(pipeline, job(model))
    assert (state.state, state.reason, state.terminal) == ("Failed", "BuildFailed", False)
    assert "registry said 500" in state.message and "retrying in 15s" in state.message
    now[0] = 16.0
    assert pipeline.state(job(model)).message.startswith("Retrying")
    builder.fail = None
    assert settle(pipeline, job(model)).state == "Ready"
    assert len(builder.requests) == 2


class HeldBuilder(FakeBuilder):
    """Builds until `release` is set, then reports its next step and tags the image."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()
        self.started: list[str] = []

    def build(self, request: ModelImageRequest, progress: Callable[[str], None]) -> BuiltImage:
        self.started.append(request.model_name)
        self.entered.set()
        assert self.release.wait(10)
        progress(f"Tagging {request.repository}:{request.tag}")
        return super().build(request, lambda _: None)


def test_a_deleted_models_build_stops_before_anything_is_tagged(
    model: digits.DigitsModel, tmp_path: Path
) -> None:
    builder = HeldBuilder()
    pipeline = pipeline_for(tmp_path, builder)
    running, queued = job(model), replace(job(model), variant=Variant("cpu", "fp32"))
    other = replace(job(model), model="other", variant=Variant("cpu", "fp32"))
    assert pipeline.state(running).state == pipeline.state(queued).state == "Building"
    pipeline.state(other)  # another model's build, queued behind them
    assert builder.entered.wait(30)
    pipeline.stop("line-3", "digits")
    builder.release.set()
    state = settle(pipeline, other)  # the queued one of the deleted model never ran
    assert state.state == "Ready"
    assert builder.started == ["digits", "other"]
    assert [r.model_name for r in builder.requests] == ["other"]  # the only one tagged
    # Applied again under the same name: a new build, not the stopped one's outcome.
    builder.release.clear()
    assert pipeline.state(running).message.startswith("Queued")
    builder.release.set()
    assert settle(pipeline, running).state == "Ready"


def test_a_full_disk_says_where_and_at_which_step(
    model: digits.DigitsModel, tmp_path: Path
) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    state = settle(pipeline_for(tmp_path, FakeBuilder(fail=full)), job(model, drop=0.5))
    assert (state.state, state.reason, state.terminal) == ("Failed", "BuildFailed", False)
    assert state.message.startswith(
        "No space left on device at 'Appending the model': free some space or give the work "
        f"directory ({tmp_path / 'work'}) more (attempt 1; retrying in"
    ), state.message
