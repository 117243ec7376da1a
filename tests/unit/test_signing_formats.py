"""The cosign and DSSE formats the operator writes, its keys, and the CycloneDX SBOM it
reads out of image layers, without a registry. Compatibility with the real cosign is proven
in tests/imagekit/test_signed_images.py."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from edgemodel_operator.adapters import sbom
from edgemodel_operator.adapters.signing import (
    DSSE_ENVELOPE,
    SIMPLE_SIGNING,
    ImageSigner,
    ImageVerifier,
    SigningKey,
    SigningKeyError,
    cosign_tag,
    load_public_keys,
    pae,
    simple_signing,
    statement,
)

DIGEST = "sha256:" + "ab" * 32


def test_the_simple_signing_payload_is_the_one_cosign_signs() -> None:
    # As `cosign sign` v2.6.5 wrote it for this repository and digest (cosign verify prints it).
    assert simple_signing("127.0.0.1:16500/line-3/digits", DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:16500/line-3/digits"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    assert cosign_tag(DIGEST, "sig") == "sha256-" + "ab" * 32 + ".sig"


def test_dsse_pre_authentication_encoding_matches_the_spec() -> None:
    # The test vector of the DSSE protocol description.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_the_attestation_statement_names_the_digest_and_cyclonedx() -> None:
    body = json.loads(statement("reg/x", DIGEST, {"bomFormat": "CycloneDX"}))
    assert body == {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://cyclonedx.org/bom",
        "subject": [{"name": "reg/x", "digest": {"sha256": "ab" * 32}}],
        "predicate": {"bomFormat": "CycloneDX"},
    }


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, password: bytes | None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())  # fmt: skip
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)  # fmt: skip


def test_signing_keys_are_p256_and_may_be_encrypted(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "signing.key").write_bytes(_pem(key, b"s3cret"))
    loaded = SigningKey.load(tmp_path / "signing.key", "s3cret")
    assert loaded.public.verifies(b"payload", loaded.sign(b"payload"))
    assert not loaded.public.verifies(b"payload!", loaded.sign(b"payload"))
    with pytest.raises(SigningKeyError, match="Cannot read the image signing key"):
        SigningKey.load(tmp_path / "signing.key", "wrong")
    (tmp_path / "p384.key").write_bytes(_pem(ec.generate_private_key(ec.SECP384R1()), None))
    with pytest.raises(SigningKeyError, match="not an ECDSA P-256 key"):
        SigningKey.load(tmp_path / "p384.key")
    (tmp_path / "rsa.key").write_bytes(_pem(rsa.generate_private_key(65537, 2048), None))
    with pytest.raises(SigningKeyError, match="not an ECDSA P-256 key"):
        SigningKey.load(tmp_path / "rsa.key")


def test_public_keys_come_from_a_file_or_a_mounted_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    for name in ("site-a.pub", "site-b.pub"):
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (secret / name).write_bytes(pem)
    (secret / "..data").mkdir()  # what a Secret volume holds besides its keys
    assert [k.name for k in load_public_keys(secret)] == ["site-a.pub", "site-b.pub"]
    assert [k.name for k in load_public_keys(secret / "site-b.pub")] == ["site-b.pub"]
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(SigningKeyError, match=r"junk\.pub"):
        load_public_keys(tmp_path / "junk.pub")


# --- SBOM ---------------------------------------------------------------------------------

STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u13

Package: removed-thing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: python3.11
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6+deb12u8
"""


def metadata(name: str, version: str, extra: str = "") -> bytes:
    return f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n{extra}\n".encode()


def layer(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return raw.getvalue()


SITE = "opt/venv/lib/python3.11/site-packages"


def test_the_sbom_lists_what_the_merged_layers_hold() -> None:
    base = layer(
        {"var/lib/dpkg/status": STATUS.encode(),
         "usr/lib/os-release": b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n',
         "usr/bin/python3.11": b"\x7fELF...",
         f"{SITE}/pip-24.0.dist-info/METADATA": metadata("pip", "24.0"),
         "opt/old/site-packages/gone-1.0.dist-info/METADATA": metadata("gone", "1.0")},
        links={"etc/os-release": "../usr/lib/os-release"},
    )  # fmt: skip
    venv = layer({
        f"{SITE}/numpy-2.4.6.dist-info/METADATA": metadata("numpy", "2.4.6"),
        f"{SITE}/onnxruntime-1.32.0.dist-info/METADATA": metadata(
            "onnxruntime", "1.32.0", "License-Expression: MIT"),
        f"{SITE}/.wh.pip-24.0.dist-info": b"",  # pip uninstalled in a later layer
        "opt/old/.wh..wh..opq": b"",  # the folder replaced: nothing below it stays
        "opt/old/new.txt": b"",
    })  # fmt: skip
    model = layer({"models/model.onnx": b"the model bytes"})
    scans = [sbom.scan_layer(io.BytesIO(blob)) for blob in (base, venv, model)]
    files, models = sbom.merge(scans)
    config = {
        "architecture": "arm64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Labels": {
            "dev.edgeai.model": "digits", "org.opencontainers.image.version": "1.4.0",
            "dev.edgeai.precision": "int8"}},
    }  # fmt: skip
    doc = sbom.image_document("reg.local:5000/line-3/digits", DIGEST, config, files, models)
    found = {(c["type"], c["name"], c.get("version")) for c in doc["components"]}
    assert found == {
        ("machine-learning-model", "digits", "1.4.0"),
        ("library", "numpy", "2.4.6"),
        ("library", "onnxruntime", "1.32.0"),
        ("library", "libc6", "2.36-9+deb12u13"),
        ("library", "python3.11", "3.11.2-6+deb12u8"),
        ("operating-system", "debian", "12"),
    }  # pip (whited out), gone (opaque folder), removed-thing (not installed) are not listed
    by_name = {c["name"]: c for c in doc["components"]}
    assert by_name["onnxruntime"]["purl"] == "pkg:pypi/onnxruntime@1.32.0"
    assert by_name["onnxruntime"]["licenses"] == [{"expression": "MIT"}]
    assert by_name["libc6"]["purl"] == (
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u13?arch=amd64&distro=debian-12"
    )
    assert by_name["digits"]["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(b"the model bytes").hexdigest()}
    ]
    subject = doc["metadata"]["component"]
    assert (subject["type"], subject["version"]) == ("container", DIGEST)
    assert subject["properties"] == [{"name": "edgeai.dev:platform", "value": "linux/arm64"}]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc)) is None
    # Deterministic: the same image, the same bytes (re-attesting writes nothing new).
    again = sbom.image_document("reg.local:5000/line-3/digits", DIGEST, config, files, models)
    assert json.dumps(again) == json.dumps(doc)


def test_an_index_sbom_names_the_platforms_of_each_component() -> None:
    def one(arch: str, packages: list[tuple[str, str]]) -> dict[str, object]:
        files = {f"{SITE}/{n}-{v}.dist-info/METADATA": metadata(n, v).decode() for n, v in packages}
        config = {"architecture": arch, "os": "linux", "config": {}}
        return sbom.image_document("reg/x", "sha256:" + arch[0] * 64, config, files, {})

    doc = sbom.index_document("reg/x", DIGEST, {
        "amd64": one("amd64", [("numpy", "2.4.6"), ("onnxruntime", "1.32.0")]),
        "arm64": one("arm64", [("numpy", "2.4.6")]),
    })  # fmt: skip
    platforms = {c["name"]: [p["value"] for p in c["properties"] if p["name"] == sbom.PLATFORM]
                 for c in doc["components"]}  # fmt: skip
    assert platforms == {"numpy": ["linux/amd64", "linux/arm64"], "onnxruntime": ["linux/amd64"]}
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc)) is None


# --- signing and verifying against an in-memory registry --------------------------------


class MemoryRegistry:
    """The registry calls TagStore makes, held in dicts; `down` makes every call fail."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.down = False

    def _up(self) -> None:
        if self.down:
            from edgemodel_operator.adapters.image_errors import RegistryError

            raise RegistryError("Could not reach the registry at reg.local:5000")

    def raw_manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        self._up()
        found = self.manifests.get((repository, reference))
        return (found, json.loads(found)["mediaType"]) if found else None

    def blob(self, repository: str, digest: str) -> bytes:
        self._up()
        return self.blobs[digest]

    def put_blob(self, repository: str, data: bytes) -> str:
        self._up()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        self._up()
        self.manifests[(repository, reference)] = body
        return "sha256:" + hashlib.sha256(body).hexdigest()


class FixedSboms:
    def image(self, repository: str, digest: str) -> dict[str, object]:
        subject = {"type": "container", "bom-ref": digest, "name": repository, "version": digest}
        return sbom.document(subject, [])


REPO = "reg.local:5000/line-3/digits"
INDEX, AMD64, ARM64 = ("sha256:" + c * 64 for c in "abc")


def signer_and_keys(tmp: Path) -> tuple[MemoryRegistry, ImageSigner, SigningKey, SigningKey]:
    keys = []
    for name in ("operator", "other"):
        (tmp / f"{name}.key").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1()), None))
        keys.append(SigningKey.load(tmp / f"{name}.key"))
    registry = MemoryRegistry()
    return registry, ImageSigner(registry, keys[0], FixedSboms()), keys[0], keys[1]  # type: ignore[arg-type]


def test_signing_is_idempotent_and_verifies_with_the_right_key_only(tmp_path: Path) -> None:
    registry, signer, own, other = signer_and_keys(tmp_path)
    first = signer.sign(REPO, INDEX, [("amd64", AMD64), ("arm64", ARM64)], lambda _: None)
    assert first.added == 6  # a signature and an attestation for the index and both images
    again = signer.sign(REPO, INDEX, [("amd64", AMD64), ("arm64", ARM64)], lambda _: None)
    assert again.added == 0  # the same payloads, signed by this key: nothing written twice
    for digest in (INDEX, AMD64, ARM64):
        for suffix in ("sig", "att"):
            (layer,) = json.loads(registry.manifests[(REPO, cosign_tag(digest, suffix))])["layers"]
            assert layer["mediaType"] in (SIMPLE_SIGNING, DSSE_ENVELOPE)
    ok = ImageVerifier(registry, [own.public]).verify(f"{REPO}@{INDEX}")  # type: ignore[arg-type]
    assert ok.verified and ok.message.startswith("verified with key operator.key (public half)")
    foreign = ImageVerifier(registry, [other.public]).verify(f"{REPO}@{INDEX}")  # type: ignore[arg-type]
    assert not foreign.verified and foreign.message.endswith("signed by another key")
    # Another signer's signature is kept beside the operator's.
    ImageSigner(registry, other, FixedSboms()).sign_image(REPO, INDEX)  # type: ignore[arg-type]
    tag = json.loads(registry.manifests[(REPO, cosign_tag(INDEX, "sig"))])
    assert len(tag["layers"]) == 2
    assert ImageVerifier(registry, [own.public]).verify(f"{REPO}@{INDEX}").verified  # type: ignore[arg-type]


def test_a_signature_moved_to_another_image_does_not_verify_it(tmp_path: Path) -> None:
    registry, signer, own, _ = signer_and_keys(tmp_path)
    signer.sign_image(REPO, AMD64)
    # An attacker copies the signature manifest of one image to the tag of another.
    registry.manifests[(REPO, cosign_tag(ARM64, "sig"))] = registry.manifests[
        (REPO, cosign_tag(AMD64, "sig"))]  # fmt: skip
    verdict = ImageVerifier(registry, [own.public]).verify(f"{REPO}@{ARM64}")  # type: ignore[arg-type]
    assert not verdict.verified
    assert f"a signature by operator.key (public half) for another digest ({AMD64})" in (
        verdict.message
    )
    unsigned = ImageVerifier(registry, [own.public]).verify(f"{REPO}@{INDEX}")  # type: ignore[arg-type]
    assert not unsigned.verified and "has no signature" in unsigned.message


def test_a_registry_outage_does_not_unverify_a_verified_image(tmp_path: Path) -> None:
    registry, signer, own, _ = signer_and_keys(tmp_path)
    signer.sign_image(REPO, INDEX)
    now = [0.0]
    verifier = ImageVerifier(registry, [own.public], ttl=60, clock=lambda: now[0])  # type: ignore[arg-type]
    assert verifier.verify(f"{REPO}@{INDEX}").verified
    registry.down = True
    now[0] = 120.0  # past the time a verdict is kept: checked again, the registry is down
    assert verifier.verify(f"{REPO}@{INDEX}").verified
    never = verifier.verify(f"{REPO}@{AMD64}")  # never verified: the outage says so
    assert not never.verified and never.message.startswith("could not read the signatures")
