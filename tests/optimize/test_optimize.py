"""optimize/: fp16 and int8 variants of the real digits model, the accuracy gate, digests,
and the artifact download (adapters.fetch) from file:// and a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from digits import DigitsModel
from onnx import numpy_helper

from edgemodel_operator.adapters.fetch import FetchError, fetch
from edgemodel_operator.optimize import (
    OptimizeError,
    Samples,
    Variant,
    digest,
    gate,
    load_samples,
    optimize,
    save_samples,
)

MAX_DROP = 0.05
Int8Mode = Literal["auto", "dynamic", "static"]
KINDS: dict[str, tuple[str, Int8Mode, str]] = {
    "fp32": ("fp32", "auto", "copy"),
    "fp16": ("fp16", "auto", "float16"),
    "int8-dynamic": ("int8", "dynamic", "int8-dynamic"),
    "int8-static": ("int8", "static", "int8-static-qdq"),
}


@pytest.fixture(scope="module")
def samples(digits_model: DigitsModel) -> Samples:
    return load_samples(digits_model.samples)


@pytest.fixture(scope="module")
def variants(
    digits_model: DigitsModel, samples: Samples, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Variant]:
    out = tmp_path_factory.mktemp("variants")
    made = {}
    for kind, (precision, mode, _) in KINDS.items():
        made[kind] = optimize(digits_model.model, precision, out / kind, samples, int8_mode=mode)
    return made


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


# --- variants -----------------------------------------------------------------------------


def test_variants_are_made_as_asked(variants: dict[str, Variant]) -> None:
    for kind, (precision, _, method) in KINDS.items():
        variant = variants[kind]
        assert (variant.precision, variant.method) == (precision, method)
        assert variant.path.name == f"model-{precision}.onnx"
        assert variant.size_bytes == variant.path.stat().st_size
        assert variant.sha256 == hashlib.sha256(variant.path.read_bytes()).hexdigest()
        # Only the finished file is left in the output folder.
        assert [p.name for p in variant.path.parent.iterdir()] == [variant.path.name]


def test_variants_are_smaller(digits_model: DigitsModel, variants: dict[str, Variant]) -> None:
    fp32 = digits_model.model.stat().st_size
    assert variants["fp32"].size_bytes == fp32
    assert variants["fp16"].size_bytes < fp32
    assert variants["int8-dynamic"].size_bytes < fp32
    assert variants["int8-static"].size_bytes < fp32


def test_each_variant_loads_and_keeps_float32_io(
    variants: dict[str, Variant], samples: Samples
) -> None:
    for kind, variant in variants.items():
        session = _session(variant.path)
        assert [(i.name, i.type) for i in session.get_inputs()] == [("input", "tensor(float)")]
        probabilities = session.run(["probabilities"], {"input": samples.x[:5]})[0]
        assert probabilities.dtype == np.float32, kind
        assert probabilities.shape == (5, 10), kind
    assert "QuantizeLinear" in _op_types(variants["int8-static"].path)
    assert "DynamicQuantizeLinear" in _op_types(variants["int8-dynamic"].path)


def test_auto_int8_is_static_with_samples_and_dynamic_without(
    digits_model: DigitsModel, samples: Samples, tmp_path: Path
) -> None:
    assert optimize(digits_model.model, "int8", tmp_path / "a", samples).method == (
        "int8-static-qdq"
    )
    assert optimize(digits_model.model, "int8", tmp_path / "b").method == "int8-dynamic"


def test_optimize_rejects_what_it_cannot_do(digits_model: DigitsModel, tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match="unknown precision 'int2'"):
        optimize(digits_model.model, "int2", tmp_path)
    with pytest.raises(OptimizeError, match="needs calibration samples"):
        optimize(digits_model.model, "int8", tmp_path, None, int8_mode="static")
    with pytest.raises(OptimizeError, match="no model file"):
        optimize(tmp_path / "absent.onnx", "fp16", tmp_path)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(OptimizeError):
        optimize(broken, "int8", tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.onnx"))  # no half-written variant


# --- accuracy gate ------------------------------------------------------------------------


def test_gate_figures_for_every_variant(
    digits_model: DigitsModel, variants: dict[str, Variant], samples: Samples
) -> None:
    for kind, variant in variants.items():
        result = gate.evaluate(digits_model.model, variant.path, samples, variant.precision)
        assert result.metric == "accuracy"
        assert result.samples == len(samples) == 450
        assert result.output == "probabilities"
        assert result.reference > 0.95, "the fp32 digits model is ~97% accurate"
        assert abs(result.candidate - result.reference) <= MAX_DROP, kind
        assert result.agreement > 0.95, kind
        verdict = gate.check(result, MAX_DROP)
        assert verdict.passed, verdict.message
        assert re.fullmatch(
            rf"{variant.precision} accuracy 0\.\d{{3}} vs fp32 0\.\d{{3}}: drop 0\.\d{{3}} "
            r"within 0\.050 \(450 samples, max abs error .+\)",
            verdict.message,
        )
    fp32 = gate.evaluate(digits_model.model, variants["fp32"].path, samples, "fp32")
    assert fp32.max_abs_error == 0.0
    fp16 = gate.evaluate(digits_model.model, variants["fp16"].path, samples, "fp16")
    assert 0 < fp16.max_abs_error < 0.01


def _damaged(source: Path, dest: Path) -> Path:
    """The same graph with every float weight set to zero: it answers, but wrongly."""
    model = onnx.load(str(source))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype.kind == "f":
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(array), init.name))
    onnx.save(model, str(dest))
    return dest


def test_gate_fails_a_damaged_model_with_figures(
    digits_model: DigitsModel, samples: Samples, tmp_path: Path
) -> None:
    damaged = _damaged(digits_model.model, tmp_path / "damaged.onnx")
    variant = optimize(damaged, "int8", tmp_path / "out")  # it still quantizes and loads
    result = gate.evaluate(digits_model.model, variant.path, samples, "int8")
    verdict = gate.check(result, 0.001)
    assert not verdict.passed
    assert result.candidate < 0.2  # all-zero weights: one class for every input
    assert re.fullmatch(
        r"int8 accuracy 0\.\d{3} vs fp32 0\.976: drop 0\.\d{3} exceeds 0\.001 "
        r"\(450 samples, max abs error .+\)",
        verdict.message,
    ), verdict.message
    assert f"drop {result.drop:.3f}" in verdict.message
    with pytest.raises(gate.GateFailed, match=r"exceeds 0\.001"):
        raise gate.GateFailed(verdict)


def test_gate_without_labels_measures_agreement(
    digits_model: DigitsModel, variants: dict[str, Variant], samples: Samples, tmp_path: Path
) -> None:
    unlabeled = Samples.of(samples.x)
    result = gate.evaluate(digits_model.model, variants["int8-static"].path, unlabeled, "int8")
    assert (result.mode, result.metric, result.reference) == ("reference", "top1_agreement", 1.0)
    assert result.candidate == result.agreement > 0.95
    # The same rows with labels, asked for reference mode explicitly: agreement, not accuracy.
    forced = gate.evaluate(digits_model.model, variants["int8-static"].path, samples, "int8",
                           gate.Thresholds(mode="reference"))  # fmt: skip
    assert (forced.metric, forced.candidate) == ("top1_agreement", result.candidate)
    message = gate.check(result, MAX_DROP).message
    assert re.match(
        r"int8 top-1 agreement with fp32 (0\.9\d\d|1\.000): drop 0\.0\d\d within", message
    )
    damaged = _damaged(digits_model.model, tmp_path / "damaged.onnx")
    bad = gate.evaluate(digits_model.model, damaged, unlabeled, "fp16")
    assert not gate.check(bad, 0.01).passed


def test_gate_check_edges() -> None:
    result = gate.GateResult(
        precision="int8",
        mode="labels",
        metric="accuracy",
        samples=1000,
        output="probabilities",
        reference=0.958,
        candidate=0.942,
    )
    failed = gate.check(result, 0.010)
    assert not failed.passed
    assert failed.message.startswith("int8 accuracy 0.942 vs fp32 0.958: drop 0.016 exceeds 0.010")
    assert gate.check(result, 0.016).passed  # a drop equal to the limit passes
    better = gate.GateResult(**{**result.__dict__, "candidate": 0.97})
    assert better.drop == 0.0
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        gate.check(result, 1.5)


def test_samples_files_and_their_checks(
    digits_model: DigitsModel, samples: Samples, tmp_path: Path
) -> None:
    np.savez(tmp_path / "labels-only.npz", y=np.zeros(2))
    with pytest.raises(OptimizeError, match="no input arrays"):
        load_samples(tmp_path / "labels-only.npz")
    with pytest.raises(OptimizeError, match="labels"):
        Samples.of(np.zeros((3, 64)), np.zeros(2, dtype=np.int64))
    with pytest.raises(OptimizeError, match="same, non-zero number of rows"):
        Samples({"a": np.zeros((3, 4)), "b": np.zeros((2, 4))})
    # Named like the model's input instead of X: the same rows, the same answers.
    named = load_samples(save_samples(tmp_path / "named.npz", Samples({"input": samples.x})))
    session = _session(digits_model.model)
    feeds = list(named.feeds(session.get_inputs()))
    assert [f["input"].shape for f in feeds][:2] == [(32, 64), (32, 64)]  # batched rows
    with pytest.raises(OptimizeError, match=r"do not match the model's inputs \['input'\]"):
        list(Samples({"pixels": samples.x, "other": samples.x}).feeds(session.get_inputs()))
    with pytest.raises(OptimizeError, match="rank 2"):
        list(Samples.of(samples.x[:, :, None, None]).feeds(session.get_inputs()))
    calibration, evaluation = samples.split(100)
    assert (len(calibration), len(evaluation)) == (100, len(samples) - 100)
    assert np.array_equal(evaluation.x[0], samples.x[100])
    with pytest.raises(OptimizeError, match="cannot split"):
        samples.split(len(samples))


# --- digest -------------------------------------------------------------------------------


def test_digest_verify_ok_and_mismatch(digits_model: DigitsModel) -> None:
    expected = hashlib.sha256(digits_model.model.read_bytes()).hexdigest()
    assert digest.sha256_file(digits_model.model) == expected
    assert digest.verify(digits_model.model, expected) == expected
    assert digest.verify(digits_model.model, "sha256:" + expected.upper()) == expected
    wrong = "0" * 64
    with pytest.raises(digest.DigestMismatch) as caught:
        digest.verify(digits_model.model, wrong)
    assert (caught.value.expected, caught.value.actual) == (wrong, expected)
    assert wrong in str(caught.value) and expected in str(caught.value)
    assert isinstance(caught.value, OptimizeError)
    with pytest.raises(ValueError, match="64 hex digits"):
        digest.verify(digits_model.model, "abc123")


def test_digest_streams_files_larger_than_a_chunk(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    data = np.random.default_rng(0).bytes(digest.CHUNK_BYTES * 2 + 123)
    big.write_bytes(data)
    assert digest.sha256_file(big) == hashlib.sha256(data).hexdigest()


# --- fetch --------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_fetch_file_uri(digits_model: DigitsModel, tmp_path: Path) -> None:
    dest = tmp_path / "dl" / "model.onnx"
    assert fetch(digits_model.model.as_uri(), dest) == dest
    assert dest.read_bytes() == digits_model.model.read_bytes()
    with pytest.raises(FetchError, match="cannot read"):
        fetch((tmp_path / "absent.onnx").as_uri(), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_fetch_http_then_verify(
    digits_model: DigitsModel, http_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = http_root
    (root / "models").mkdir()
    (root / "models" / "model.onnx").write_bytes(digits_model.model.read_bytes())
    dest = fetch(f"{base}/models/model.onnx", tmp_path / "model.onnx")
    expected = digest.sha256_file(digits_model.model)
    assert digest.verify(dest, expected) == expected
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{base}/models/missing.onnx", tmp_path / "missing.onnx")
    assert not (tmp_path / "missing.onnx").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_fetch_rejects_other_schemes_and_unreachable_hosts(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unsupported scheme 's3'"):
        fetch("s3://bucket/model.onnx", tmp_path / "m.onnx")
    with pytest.raises(FetchError, match="file:///path"):
        fetch("file://otherhost/model.onnx", tmp_path / "m.onnx")
    with pytest.raises(FetchError, match=r"127\.0\.0\.1:9"):
        fetch("http://127.0.0.1:9/model.onnx", tmp_path / "m.onnx", timeout=(2.0, 2.0))
