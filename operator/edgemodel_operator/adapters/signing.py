"""Image signatures and SBOM attestations that cosign, Kyverno and sigstore's
policy-controller verify, made and checked in Python with `cryptography` (no binary in the
operator's pod), with keys only: no Fulcio, no Rekor, so they work on offline sites.

What is written, by digest, in the image's own repository under cosign's tag scheme (for
registries without the OCI referrers API):
- `sha256-<hex>.sig`: an OCI manifest whose layers are simple-signing payloads
  ({"critical": {"identity": {"docker-reference": repo}, "image": {"docker-manifest-digest":
  digest}, "type": "cosign container image signature"}, "optional": null}), each with its
  ECDSA-SHA256 signature (ASN.1, base64) in the annotation dev.cosignproject.cosign/signature;
- `sha256-<hex>.att`: layers that are DSSE envelopes (payloadType application/vnd.in-toto+json)
  of an in-toto Statement v0.1 about the digest, predicateType https://cyclonedx.org/bom and
  the image's CycloneDX SBOM as predicate, signed over DSSE's pre-authentication encoding.
Layers other signers (cosign) wrote stay; a signature this key already made is not added
twice. `cosign verify --key` / `cosign verify-attestation --type cyclonedx` with
`--insecure-ignore-tlog=true` accept both (tests/imagekit/test_signed_images.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgemodel_operator.adapters.image_errors import ImageError, RegistryError
from edgemodel_operator.adapters.registry import OCI_MANIFEST, Registry, canonical, split_reference
from edgemodel_operator.adapters.sbom import PREDICATE_TYPE, SbomMaker, index_document
from edgemodel_operator.reconcile.signatures import Verdict

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT = "https://in-toto.io/Statement/v0.1"  # what cosign v2 attest writes
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
ZERO_TIME = "0001-01-01T00:00:00Z"  # go-containerregistry's empty image
Progress = Callable[[str], None]


class SigningKeyError(ImageError):
    """A key file cannot be read or is not a supported key; the message names the file."""


def cosign_tag(digest: str, suffix: str) -> str:
    """cosign's tag for the signatures (sig) or attestations (att) of a digest."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}.{suffix}"


def simple_signing(repository: str, digest: str) -> bytes:
    """The payload `cosign sign` signs for repository@digest (its JSON, field for field)."""
    return json.dumps(
        {"critical": {"identity": {"docker-reference": repository},
                      "image": {"docker-manifest-digest": digest}, "type": SIGNATURE_TYPE},
         "optional": None},
        separators=(",", ":"),
    ).encode()  # fmt: skip


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement(repository: str, digest: str, predicate: Mapping[str, Any]) -> bytes:
    """An in-toto statement about repository@digest with a CycloneDX predicate."""
    return canonical({
        "_type": STATEMENT, "predicateType": PREDICATE_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicate": predicate,
    })  # fmt: skip


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """A short name of a public key: the start of the sha256 of its DER encoding."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:12]


@dataclass(frozen=True)
class SigningKey:
    key: ec.EllipticCurvePrivateKey
    name: str

    @classmethod
    def load(cls, path: Path, password: str = "") -> SigningKey:
        """A PEM ECDSA P-256 private key (PKCS#8 or SEC1; encrypted with `password`)."""
        try:
            key = serialization.load_pem_private_key(
                path.read_bytes(), password.encode() if password else None
            )
        except (OSError, ValueError, TypeError) as err:
            raise SigningKeyError(f"Cannot read the image signing key {path}: {err}") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise SigningKeyError(
                f"The image signing key {path} is not an ECDSA P-256 key (make one with "
                "`openssl ecparam -name prime256v1 -genkey`)"
            )
        return cls(key, path.name)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    @property
    def public(self) -> VerifyKey:
        return VerifyKey(self.key.public_key(), f"{self.name} (public half)")


@dataclass(frozen=True)
class VerifyKey:
    key: ec.EllipticCurvePublicKey
    name: str

    def verifies(self, data: bytes, signature: bytes) -> bool:
        try:
            self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def load_public_keys(path: Path) -> tuple[VerifyKey, ...]:
    """The PEM public keys in a file, or in every file of a folder (a mounted Secret; its
    hidden entries skipped), named by file."""
    files = (sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
             if path.is_dir() else [path])  # fmt: skip
    keys = []
    for file in files:
        try:
            key = serialization.load_pem_public_key(file.read_bytes())
        except (OSError, ValueError) as err:
            raise SigningKeyError(f"Cannot read the public key {file}: {err}") from err
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SigningKeyError(f"The public key {file} is not an ECDSA key")
        keys.append(VerifyKey(key, file.name))
    if not keys:
        raise SigningKeyError(f"{path} holds no public key")
    return tuple(keys)


class TagStore:
    """cosign's `sha256-<hex>.sig` / `.att` manifests of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def layers(
        self, repository: str, digest: str, suffix: str
    ) -> list[tuple[dict[str, Any], bytes]]:
        """(layer descriptor, payload) of every layer under the digest's tag; [] if none."""
        found = self.registry.raw_manifest(repository, cosign_tag(digest, suffix))
        if found is None:
            return []
        manifest = json.loads(found[0])
        return [(layer, self.registry.blob(repository, str(layer["digest"])))
                for layer in manifest.get("layers") or []]  # fmt: skip

    def append(
        self, repository: str, digest: str, suffix: str, payload: bytes, media_type: str,
        annotations: Mapping[str, str], present: Callable[[dict[str, Any], bytes], bool],
    ) -> bool:  # fmt: skip
        """Add one layer to the digest's tag unless `present` finds it there; True if added."""
        existing = self.layers(repository, digest, suffix)
        if any(present(layer, data) for layer, data in existing):
            return False
        layers = [layer for layer, _ in existing]
        layers.append({"mediaType": media_type, "size": len(payload),
                       "digest": self.registry.put_blob(repository, payload),
                       "annotations": dict(annotations)})  # fmt: skip
        config = canonical({
            "architecture": "", "os": "", "created": ZERO_TIME, "config": {},
            "history": [{"created": ZERO_TIME} for _ in layers],
            # The layers are stored uncompressed: each one's diff_id is its digest.
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        })  # fmt: skip
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config),
                       "digest": self.registry.put_blob(repository, config)},
            "layers": layers,
        }  # fmt: skip
        self.registry.put_manifest(repository, cosign_tag(digest, suffix), canonical(manifest),
                                   OCI_MANIFEST)  # fmt: skip
        return True


@dataclass(frozen=True)
class Signed:
    digests: tuple[str, ...]  # the index's, then each platform image's
    added: int  # signatures and attestations written now (0: all there already)
    sbom: Mapping[str, Any]  # the index's SBOM


class ImageSigner:
    """Signs an image index and its platform images by digest and attests their SBOMs."""

    def __init__(self, registry: Registry, key: SigningKey, sboms: SbomMaker) -> None:
        self._store = TagStore(registry)
        self._key = key
        self._sboms = sboms

    def sign_image(self, repository: str, digest: str) -> bool:
        payload = simple_signing(repository, digest)
        signature = base64.b64encode(self._key.sign(payload)).decode()

        def mine(layer: dict[str, Any], data: bytes) -> bool:
            return data == payload and self._key.public.verifies(
                data, _b64((layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, ""))
            )

        return self._store.append(repository, digest, "sig", payload, SIMPLE_SIGNING,
                                  {SIGNATURE_ANNOTATION: signature}, mine)  # fmt: skip

    def attest(self, repository: str, digest: str, sbom: Mapping[str, Any]) -> bool:
        body = statement(repository, digest, sbom)
        envelope = canonical({
            "payloadType": IN_TOTO, "payload": base64.b64encode(body).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(
                self._key.sign(pae(IN_TOTO, body))).decode()}],
        })  # fmt: skip

        def mine(_: dict[str, Any], data: bytes) -> bool:
            found = _envelope(data)
            return (
                found is not None
                and found[0] == body
                and any(self._key.public.verifies(pae(IN_TOTO, body), s) for s in found[1])
            )

        # cosign leaves the signature annotation empty on attestations (DSSE carries it).
        notes = {SIGNATURE_ANNOTATION: "", "predicateType": PREDICATE_TYPE}
        return self._store.append(repository, digest, "att", envelope, DSSE_ENVELOPE, notes, mine)

    def sign(
        self, repository: str, index: str, platforms: Sequence[tuple[str, str]], progress: Progress
    ) -> Signed:
        """Sign the index and each (arch, digest) platform image; attest their SBOMs."""
        added = 0
        boms = {}
        for arch, digest in platforms:
            progress(f"Signing the {arch} image {digest[:19]} and attesting its SBOM")
            boms[arch] = self._sboms.image(repository, digest)
            added += self.sign_image(repository, digest) + self.attest(repository, digest,
                                                                        boms[arch])  # fmt: skip
        progress(f"Signing the index {index[:19]} and attesting its SBOM")
        index_bom = index_document(repository, index, boms)
        added += self.sign_image(repository, index) + self.attest(repository, index, index_bom)
        return Signed((index, *(d for _, d in platforms)), added, index_bom)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""


def _envelope(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """(statement, signatures) of a DSSE envelope; None if it is not one."""
    try:
        env = json.loads(data)
        if env.get("payloadType") != IN_TOTO:
            return None
        sigs = [_b64(str(s.get("sig", ""))) for s in env.get("signatures") or []]
        return base64.b64decode(env["payload"]), sigs
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class ImageVerifier:
    """Checks the cosign signatures of an image by digest against the configured keys.
    Answers are kept: a verified image for ten minutes, a failure for `retry` seconds (so a
    signature added later is noticed soon); a registry that cannot be reached is a failure
    that says so."""

    def __init__(
        self, registry: Registry, keys: Sequence[VerifyKey], ttl: float = 600.0,
        retry: float = 15.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._store = TagStore(registry)
        self._keys = tuple(keys)
        self._ttl, self._retry, self._clock = ttl, retry, clock
        self._known: dict[str, tuple[float, Verdict]] = {}
        self._lock = threading.Lock()

    @property
    def keys(self) -> tuple[VerifyKey, ...]:
        return self._keys

    def verify(self, reference: str) -> Verdict:
        with self._lock:
            known = self._known.get(reference)
        if known and self._clock() < known[0]:
            return known[1]
        verdict, unreachable = self._check(reference)
        if unreachable and known and known[1].verified:
            verdict = known[1]  # a registry outage does not unverify what was verified
        keep = self._ttl if verdict.verified else self._retry
        with self._lock:
            self._known[reference] = (self._clock() + keep, verdict)
        return verdict

    def _check(self, reference: str) -> tuple[Verdict, bool]:
        """The verdict, and whether the registry could not be read."""
        repository, digest = split_reference(reference)
        if not digest.startswith("sha256:"):
            return Verdict(False, f"{reference} is not pinned by digest"), False
        try:
            layers = self._store.layers(repository, digest, "sig")
        except (RegistryError, ValueError) as err:
            return Verdict(False, f"could not read the signatures of {reference}: {err}"), True
        return self._judge(reference, digest, layers), False

    def _judge(
        self, reference: str, digest: str, layers: Sequence[tuple[dict[str, Any], bytes]]
    ) -> Verdict:
        repository = split_reference(reference)[0]
        names = ", ".join(f"{k.name} ({key_id(k.key)})" for k in self._keys)
        if not layers:
            return Verdict(False, f"{reference} has no signature ({repository}:"
                           f"{cosign_tag(digest, 'sig')} is absent)")  # fmt: skip
        claims = []
        for layer, payload in layers:
            signature = _b64((layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, ""))
            key = next((k for k in self._keys if k.verifies(payload, signature)), None)
            if key is None:
                continue
            try:
                critical = json.loads(payload)["critical"]
                claimed = critical["image"]["docker-manifest-digest"]
                kind = critical["type"]
            except (ValueError, KeyError, TypeError):
                claims.append("a signed payload that is not a cosign simple-signing payload")
                continue
            if kind == SIGNATURE_TYPE and claimed == digest:
                return Verdict(True, f"verified with key {key.name} ({key_id(key.key)})")
            claims.append(f"a signature by {key.name} for another digest ({claimed})")
        if claims:
            return Verdict(False, f"{reference}: " + "; ".join(claims))
        return Verdict(False, f"{reference} has {len(layers)} signature(s), none by a trusted "
                       f"key ({names}): signed by another key")  # fmt: skip
