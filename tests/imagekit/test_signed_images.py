"""Signed models in, signed images with SBOMs out, against the local registry and the real
cosign: the operator's image pipeline verifies the publisher's model-signing signature of
the digits model, builds its int8 image on the published multi-arch server index, signs the
index and each platform image and attests their CycloneDX SBOMs in Python; then cosign
v2.6.5 (built from its Go module, transparency log off) verifies what it wrote, with the
right key and not with another; the SBOM lists onnxruntime and numpy at the versions the
image itself reports; an image signed by another key is not pinned; and a signature cosign
made is accepted by the operator. Offline: nothing leaves 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import digits
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from imagekit_support import Kit, record, report
from signing_support import (
    Cosign,
    KeyPair,
    attested_sboms,
    cosign_binary,
    key_pair,
    sign_model,
)

from edgemodel_operator.adapters.model_images import RegistryModelBuilder
from edgemodel_operator.adapters.model_signatures import ModelSignatures
from edgemodel_operator.adapters.registry import Registry, split_reference
from edgemodel_operator.adapters.sbom import SbomMaker
from edgemodel_operator.adapters.signing import (
    ImageSigner,
    ImageVerifier,
    SigningKey,
    cosign_tag,
    load_public_keys,
)
from edgemodel_operator.adapters.unpacked import UnpackedRunner
from edgemodel_operator.api.spec import ModelSignature
from edgemodel_operator.config import BuildConfig
from edgemodel_operator.reconcile.images import ImageJob, ImageState, Variant
from edgemodel_operator.reconcile.signatures import SignaturePolicy
from edgemodel_operator.services.images import ImagePipeline, Signing


@dataclass(frozen=True)
class Keys:
    publisher: KeyPair  # signs the model (model-signing)
    images: KeyPair  # the operator's image signing key (encrypted PEM)
    other: KeyPair  # someone else's


@dataclass(frozen=True)
class Built:
    state: ImageState
    repository: str
    index: str
    platforms: dict[str, str]  # arch -> digest
    work: Path
    seconds: float


@pytest.fixture(scope="module")
def cosign() -> Cosign:
    return Cosign(cosign_binary())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    return Keys(key_pair(folder, "publisher"), key_pair(folder, "images", "s3cret"),
                key_pair(folder, "other"))  # fmt: skip


def job(model: digits.DigitsModel, signature: ModelSignature | None) -> ImageJob:
    sha = hashlib.sha256(model.model.read_bytes()).hexdigest()
    return ImageJob("signing", "digits", model.model.as_uri(), sha, "1.0.0", Variant("cpu", "int8"),
                    model.samples.as_uri(), 0.05, signature=signature)  # fmt: skip


def pipeline(
    kit: Kit, server_images: str, work: Path, signing: Signing, registry: Registry
) -> ImagePipeline:
    config = BuildConfig("registry", f"{kit.registry}/edgemodels-test-{kit.run_id}", True, "",
                         str(work))  # fmt: skip
    builder = RegistryModelBuilder(registry, UnpackedRunner(registry, work / "rootfs"))
    return ImagePipeline(config, builder, server_images, signing=signing)


def settle(images: ImagePipeline, wanted: ImageJob, timeout: float = 600) -> ImageState:
    deadline = time.monotonic() + timeout
    while (state := images.state(wanted)).state == "Building":
        assert time.monotonic() < deadline, f"the build did not finish: {state.message}"
        time.sleep(0.5)
    return state


class TimedSigner(ImageSigner):
    """The operator's signer, timed for the report at the end of the run."""

    def sign(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return super().sign(*args, **kwargs)
        finally:
            record("signing the index and its platform images, SBOMs attested",
                   time.monotonic() - started)  # fmt: skip


@pytest.fixture(scope="module")
def built(
    imagekit: Kit, server_images: str, digits_model: digits.DigitsModel, keys: Keys,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Built]:  # fmt: skip
    """The digits model, signed by its publisher, built and signed by the pipeline."""
    work = tmp_path_factory.mktemp("work")
    bundle = sign_model(keys.publisher, digits_model.model, work / "model.onnx.sig")
    registry = Registry(insecure=True)
    key = SigningKey.load(keys.images.private, keys.images.password)
    signing = Signing(
        models=ModelSignatures(True, load_public_keys(keys.publisher.public), None, work),
        signer=TimedSigner(registry, key, SbomMaker(registry, work / "sbom")),
        verifier=ImageVerifier(registry, load_public_keys(keys.images.public)),
        policy=SignaturePolicy("enforce"),
    )
    images = pipeline(imagekit, server_images, work, signing, registry)
    started = time.monotonic()
    state = settle(images, job(digits_model, ModelSignature(bundle.as_uri())))
    seconds = time.monotonic() - started
    record("signed model -> built, signed and attested image (pipeline)", seconds)
    images.close()
    assert state.state == "Ready", state.message
    repository, index = split_reference(state.reference)
    found = registry.manifest(repository, index)
    assert found is not None and found.platforms
    yield Built(state, repository, index, dict(found.platforms), work, seconds)


def test_a_signed_model_builds_an_image_verified_before_it_is_pinned(built: Built) -> None:
    assert built.state.signature.startswith("verified with key images.pub (")
    assert set(built.platforms) == set(os.environ.get("E2E_PLATFORMS", "amd64,arm64").split(","))
    registry = Registry(insecure=True)
    for digest in (built.index, *built.platforms.values()):
        for suffix in ("sig", "att"):
            assert registry.raw_manifest(built.repository, cosign_tag(digest, suffix)), suffix


def test_cosign_verifies_the_signatures_with_the_operators_key_only(
    built: Built, keys: Keys, cosign: Cosign
) -> None:
    for digest in (built.index, *built.platforms.values()):
        ok = cosign.verify(keys.images.public, f"{built.repository}@{digest}")
        assert ok.returncode == 0, ok.stderr
        (claim,) = json.loads(ok.stdout)
        assert claim["critical"]["image"]["docker-manifest-digest"] == digest
        assert claim["critical"]["identity"]["docker-reference"] == built.repository
    foreign = cosign.verify(keys.other.public, f"{built.repository}@{built.index}")
    assert foreign.returncode != 0
    assert "no matching signatures" in foreign.stderr
    started = time.monotonic()
    cosign.verify(keys.images.public, f"{built.repository}@{built.index}")
    report(f"cosign verify of the index: {time.monotonic() - started:.2f}s")


def test_cosign_verifies_the_sbom_attestations(built: Built, keys: Keys, cosign: Cosign) -> None:
    for digest in (built.index, *built.platforms.values()):
        ok = cosign.verify_sbom(keys.images.public, f"{built.repository}@{digest}")
        assert ok.returncode == 0, ok.stderr
        (bom,) = attested_sboms(ok.stdout)
        assert bom["metadata"]["component"]["version"] == digest
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom)) is None
    foreign = cosign.verify_sbom(keys.other.public, f"{built.repository}@{built.index}")
    assert foreign.returncode != 0


def test_the_sbom_lists_the_runtime_at_the_versions_in_the_image(
    built: Built, keys: Keys, cosign: Cosign, imagekit: Kit, digits_model: digits.DigitsModel
) -> None:
    import docker

    ok = cosign.verify_sbom(keys.images.public, f"{built.repository}@{built.index}")
    (bom,) = attested_sboms(ok.stdout)
    listed: dict[str, set[str]] = {}
    for component in bom["components"]:
        listed.setdefault(component["name"], set()).add(component.get("version", ""))
    # What the image itself says, asked through podman's Docker API (its amd64 image).
    client = docker.DockerClient(base_url=imagekit.docker_host)
    try:
        out = client.containers.run(
            f"{built.repository}@{built.index}", remove=True,
            entrypoint=["/opt/venv/bin/python", "-c",
                        "import importlib.metadata as m; "
                        "print(m.version('onnxruntime'), m.version('numpy'))"],
        )  # fmt: skip
    finally:
        client.close()
    onnxruntime, numpy = out.decode().split()
    assert listed["onnxruntime"] == {onnxruntime}
    assert listed["numpy"] == {numpy}
    (model,) = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    assert (model["name"], model["version"]) == ("digits", "1.0.0")
    variant = built.work / "variants" / hashlib.sha256(
        digits_model.model.read_bytes()).hexdigest() / "cpu" / "model-int8.onnx"  # fmt: skip
    assert model["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(variant.read_bytes()).hexdigest()}
    ]
    debian = [c for c in bom["components"] if c.get("purl", "").startswith("pkg:deb/debian/")]
    assert any(c["name"] == "libc6" for c in debian)
    report(f"SBOM of the index: {len(bom['components'])} components "
           f"({len(debian)} Debian packages over {len(built.platforms)} platforms)")  # fmt: skip


def test_an_image_signed_by_another_key_is_not_pinned(
    built: Built, keys: Keys, imagekit: Kit, server_images: str,
    digits_model: digits.DigitsModel, tmp_path: Path,
) -> None:  # fmt: skip
    registry = Registry(insecure=True)
    signing = Signing(verifier=ImageVerifier(registry, load_public_keys(keys.other.public)),
                      policy=SignaturePolicy("enforce"))  # fmt: skip
    images = pipeline(imagekit, server_images, built.work, signing, registry)
    state = settle(images, job(digits_model, None))  # the same image: found, not rebuilt
    images.close()
    assert (state.state, state.reason) == ("Failed", "ImageSignatureInvalid")
    assert state.message.startswith(f"{built.repository}@{built.index} was not pinned")
    assert "none by a trusted key (other.pub" in state.message
    assert "signed by another key" in state.message


def test_a_signature_made_by_cosign_is_accepted(
    built: Built, keys: Keys, cosign: Cosign, tmp_path: Path
) -> None:
    made = cosign.run("generate-key-pair", "--output-key-prefix", str(tmp_path / "ci"),
                      password="ci")  # fmt: skip
    assert made.returncode == 0, made.stderr
    platform = next(iter(built.platforms.values()))
    reference = f"{built.repository}@{platform}"
    signed = cosign.run("sign", "--key", str(tmp_path / "ci.key"), "--tlog-upload=false",
                        "--allow-insecure-registry", reference, password="ci")  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    registry = Registry(insecure=True)
    verdict = ImageVerifier(registry, load_public_keys(tmp_path / "ci.pub")).verify(reference)
    assert verdict.verified, verdict.message
    # The operator's own signature is still there beside cosign's, for both to verify.
    own = ImageVerifier(registry, load_public_keys(keys.images.public)).verify(reference)
    assert own.verified, own.message
    assert cosign.verify(keys.images.public, reference).returncode == 0
