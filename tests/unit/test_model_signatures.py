"""The publisher's signature of a model, checked by the image pipeline before it optimizes or
builds anything: real keys made here, real bundles made by OpenSSF model-signing as a
publisher makes them, the real digits model; only the image builder is a fake. A valid
signature builds; a tampered model, another key and a missing signature are each refused
with their own message, and nothing is built."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing import signing
from test_image_pipeline import FakeBuilder, model, pipeline_for, settle

from edgemodel_operator.adapters.kube import SecretUnavailable
from edgemodel_operator.adapters.model_signatures import ModelSignatures
from edgemodel_operator.adapters.signing import load_public_keys
from edgemodel_operator.api.spec import ModelSignature, SecretKeyRef
from edgemodel_operator.reconcile.images import ImageJob, Variant
from edgemodel_operator.services.images import Signing

__all__ = ["model"]  # the digits model fixture, shared with test_image_pipeline


class Publisher:
    """A model publisher: an EC key pair, and model-signing to sign with it."""

    def __init__(self, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        self.private = folder / f"{name}.key"
        self.private.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))  # fmt: skip
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = folder / f"{name}.pub"
        self.public.write_bytes(self.public_pem)

    def sign(self, model_file: Path, bundle: Path) -> Path:
        signing.Config().use_elliptic_key_signer(private_key=self.private).sign(model_file, bundle)
        return bundle


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Publisher, Publisher]:
    return Publisher(tmp_path / "keys", "acme"), Publisher(tmp_path / "keys", "mallory")


def sig_job(
    model_file: Path, signature: ModelSignature | None, namespace: str = "line-3"
) -> ImageJob:
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    return ImageJob(namespace, "digits", model_file.as_uri(), sha, "1", Variant("cpu", "int8"),
                    signature=signature)  # fmt: skip


def checks(
    tmp: Path, trusted: list[Path], required: bool = False,
    secrets: Callable[[str, str, str], bytes] | None = None,
) -> Signing:  # fmt: skip
    keys = tuple(k for path in trusted for k in load_public_keys(path))
    return Signing(models=ModelSignatures(required, keys, secrets, tmp / "work"))


def test_a_model_with_a_valid_signature_builds(
    model: object, keys: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    acme, _ = keys
    bundle = acme.sign(model.model, tmp_path / "model.onnx.sig")  # type: ignore[attr-defined]
    builder = FakeBuilder()
    pipeline = pipeline_for(tmp_path, builder, signing=checks(tmp_path, [acme.public]))
    state = settle(pipeline, sig_job(model.model, ModelSignature(bundle.as_uri())))  # type: ignore[attr-defined]
    assert state.state == "Ready", state.message
    assert len(builder.requests) == 1


def test_a_tampered_model_is_refused(
    model: object, keys: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    acme, _ = keys
    original: Path = model.model  # type: ignore[attr-defined]
    bundle = acme.sign(original, tmp_path / "model.onnx.sig")
    tampered = tmp_path / "store" / "model.onnx"
    tampered.parent.mkdir()
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, and a spec sha256 that matches it
    tampered.write_bytes(bytes(data))
    builder = FakeBuilder(known=True)  # even an image the registry already has is refused
    pipeline = pipeline_for(tmp_path, builder, signing=checks(tmp_path, [acme.public]))
    state = settle(pipeline, sig_job(tampered, ModelSignature(bundle.as_uri())))
    assert (state.state, state.reason, state.terminal) == ("Failed", "ModelSignatureInvalid", True)
    assert state.message.startswith("tampered model: the file (sha256 ")
    signed = hashlib.sha256(original.read_bytes()).hexdigest()
    assert f"is not the one the publisher signed (sha256 {signed})" in state.message
    assert "nothing was built" in state.message
    assert builder.requests == []


def test_a_signature_by_another_key_is_refused(
    model: object, keys: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    acme, mallory = keys
    model_file: Path = model.model  # type: ignore[attr-defined]
    bundle = mallory.sign(model_file, tmp_path / "model.onnx.sig")
    builder = FakeBuilder()
    pipeline = pipeline_for(tmp_path, builder, signing=checks(tmp_path, [acme.public]))
    state = settle(pipeline, sig_job(model_file, ModelSignature(bundle.as_uri())))
    assert (state.state, state.reason) == ("Failed", "ModelSignatureInvalid")
    assert state.message.startswith("signed by another key: ")
    assert "which is not acme.pub (" in state.message
    assert builder.requests == []


def test_a_missing_signature_is_refused(
    model: object, keys: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    acme, _ = keys
    model_file: Path = model.model  # type: ignore[attr-defined]
    builder = FakeBuilder()
    required = checks(tmp_path, [acme.public], required=True)
    state = settle(pipeline_for(tmp_path, builder, signing=required), sig_job(model_file, None))
    assert (state.state, state.reason) == ("Failed", "ModelSignatureInvalid")
    assert state.message.startswith("missing signature: the operator requires signed models")
    # Named in the spec but not where it points: missing too, saying where it looked.
    absent = ModelSignature((tmp_path / "nowhere.sig").as_uri())
    pipeline = pipeline_for(tmp_path, builder, signing=checks(tmp_path, [acme.public]))
    state = settle(pipeline, sig_job(model_file, absent))
    assert state.message.startswith("missing signature: could not fetch spec.model.signature.uri")
    assert "nowhere.sig" in state.message
    assert builder.requests == []


def test_without_a_signature_or_a_policy_nothing_is_checked(model: object, tmp_path: Path) -> None:
    builder = FakeBuilder()
    pipeline = pipeline_for(tmp_path, builder, signing=checks(tmp_path, []))
    assert settle(pipeline, sig_job(model.model, None)).state == "Ready"  # type: ignore[attr-defined]
    # An operator that cannot verify signatures does not build a spec that asks for one.
    asked = ModelSignature((tmp_path / "model.sig").as_uri())
    state = settle(pipeline_for(tmp_path, builder), sig_job(model.model, asked))  # type: ignore[attr-defined]
    assert (state.state, state.reason) == ("Failed", "ModelSignatureInvalid")
    assert "does not verify model signatures" in state.message


def test_the_key_may_come_from_a_secret_and_a_fixed_secret_is_picked_up(
    model: object, keys: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    acme, mallory = keys
    model_file: Path = model.model  # type: ignore[attr-defined]
    bundle = acme.sign(model_file, tmp_path / "model.onnx.sig")
    stored = {("line-3", "publisher", "model.pub"): mallory.public_pem}  # the wrong key first

    def secret(namespace: str, name: str, key: str) -> bytes:
        if (namespace, name, key) not in stored:
            raise SecretUnavailable(f"Secret {namespace}/{name} does not exist")
        return stored[(namespace, name, key)]

    now = [0.0]
    builder = FakeBuilder()
    pipeline = pipeline_for(tmp_path, builder, clock=lambda: now[0],
                            signing=checks(tmp_path, [], secrets=secret))  # fmt: skip
    signature = ModelSignature(bundle.as_uri(), SecretKeyRef("publisher", "model.pub"))
    state = settle(pipeline, sig_job(model_file, signature))
    assert state.message.startswith("signed by another key: ")
    assert "Secret line-3/publisher (key model.pub)" in state.message
    stored[("line-3", "publisher", "model.pub")] = acme.public_pem  # the owner fixes the Secret
    assert pipeline.state(sig_job(model_file, signature)).reason == "ModelSignatureInvalid"
    now[0] = 16.0  # rechecked with backoff; the failure stays shown meanwhile
    assert pipeline.state(sig_job(model_file, signature)).reason == "ModelSignatureInvalid"
    deadline = time.monotonic() + 60
    while (state := pipeline.state(sig_job(model_file, signature))).state != "Ready":
        assert state.state == "Failed" and time.monotonic() < deadline, state
        time.sleep(0.05)
    # Another namespace has no such Secret: it says so.
    state = settle(pipeline, sig_job(model_file, signature, namespace="line-4"))
    assert state.message == "Secret line-4/publisher does not exist"


def test_a_required_policy_takes_only_the_operators_keys(
    model: object, keys: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    acme, mallory = keys
    model_file: Path = model.model  # type: ignore[attr-defined]
    bundle = mallory.sign(model_file, tmp_path / "model.onnx.sig")
    builder = FakeBuilder()
    own = checks(tmp_path, [acme.public], required=True,
                 secrets=lambda *_: mallory.public_pem)  # fmt: skip
    signature = ModelSignature(bundle.as_uri(), SecretKeyRef("publisher", "model.pub"))
    state = settle(pipeline_for(tmp_path, builder, signing=own), sig_job(model_file, signature))
    assert state.message.startswith("the operator requires models signed with the keys it trusts")
    assert builder.requests == []


def test_an_altered_bundle_is_refused(
    model: object, keys: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    acme, _ = keys
    model_file: Path = model.model  # type: ignore[attr-defined]
    bundle = acme.sign(model_file, tmp_path / "model.onnx.sig")
    forged = json.loads(bundle.read_text())
    envelope = forged["dsseEnvelope"]
    sig = bytearray(envelope["signatures"][0]["sig"].encode())
    sig[10] = ord("A") if sig[10] != ord("A") else ord("B")
    envelope["signatures"][0]["sig"] = sig.decode()
    bundle.write_text(json.dumps(forged))
    pipeline = pipeline_for(tmp_path, FakeBuilder(), signing=checks(tmp_path, [acme.public]))
    state = settle(pipeline, sig_job(model_file, ModelSignature(bundle.as_uri())))
    assert state.reason == "ModelSignatureInvalid"
    assert "does not verify with acme.pub: the bundle was altered or forged" in state.message
    garbage = tmp_path / "garbage.sig"
    shutil.copyfile(model_file, garbage)
    state = settle(pipeline, sig_job(model_file, ModelSignature(garbage.as_uri())))
    assert "is not a model-signing bundle" in state.message
