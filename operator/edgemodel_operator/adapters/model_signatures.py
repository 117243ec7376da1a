"""The publisher's signature of a model, checked before the model is optimized or built:
an OpenSSF model-signing bundle (a sigstore bundle whose DSSE envelope carries an in-toto
statement of the file's sha256) made with an elliptic-curve key, verified by `model-signing`
itself against the spec's key (a Secret of the EdgeModel's namespace) or the operator's
trusted keys. No transparency log, no network beyond fetching the bundle.

Each refusal says what is wrong, in words of its own: no signature, a signature by another
key, a model that is not the file that was signed, a bundle that is not one."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from edgemodel_operator.adapters.fetch import FetchError, fetch
from edgemodel_operator.adapters.kube import SecretUnavailable
from edgemodel_operator.adapters.signing import SigningKeyError, VerifyKey, key_id
from edgemodel_operator.api.spec import ModelSignature

# namespace, Secret name, key -> the value; raises SecretUnavailable saying why not.
SecretReader = Callable[[str, str, str], bytes]


class ModelSignatureInvalid(Exception):
    """The model's signature is missing, foreign, does not match the file, or unreadable."""


def hint(key: VerifyKey) -> str:
    """model-signing's public-key hint: the sha256 of the key's PEM (SubjectPublicKeyInfo)."""
    return hashlib.sha256(key.pem()).hexdigest()


def _secret_key(
    secrets: SecretReader | None, namespace: str, signature: ModelSignature
) -> VerifyKey:
    ref = signature.key_secret_ref
    assert ref is not None
    where = f"Secret {namespace}/{ref.name} (key {ref.key})"
    if secrets is None:
        raise ModelSignatureInvalid(f"cannot read {where}: this operator reads no Secrets")
    try:
        pem = secrets(namespace, ref.name, ref.key)
        key = serialization.load_pem_public_key(pem)
    except SecretUnavailable as err:
        raise ModelSignatureInvalid(str(err)) from err
    except ValueError as err:
        raise ModelSignatureInvalid(f"{where} is not a PEM public key: {err}") from err
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ModelSignatureInvalid(f"{where} is not an elliptic-curve public key")
    return VerifyKey(key, where)


def _signed_digests(bundle: dict[str, object]) -> list[str]:
    """The file digests the bundle's statement lists (model-signing's resources)."""
    try:
        envelope = bundle["dsseEnvelope"]
        body = json.loads(base64.b64decode(envelope["payload"]))  # type: ignore[index]
        return [str(r["digest"]) for r in body["predicate"]["resources"]]
    except (KeyError, TypeError, ValueError):
        return []


class ModelSignatures:
    def __init__(
        self, required: bool, trusted: Sequence[VerifyKey], secrets: SecretReader | None,
        work: Path,
    ) -> None:  # fmt: skip
        self.required = required  # every model needs a signature by a trusted key
        self._trusted = tuple(trusted)
        self._secrets = secrets
        self._work = work

    def applies(self, signature: ModelSignature | None) -> bool:
        return signature is not None or self.required

    def verify(
        self, namespace: str, sha256: str, signature: ModelSignature | None, model: Path
    ) -> str:
        """Check `model` (whose sha256 is already verified) against its signature; the key
        that signed it. ModelSignatureInvalid otherwise."""
        if signature is None:
            raise ModelSignatureInvalid(
                "missing signature: the operator requires signed models "
                "(EDGEMODEL_MODEL_SIGNATURE_POLICY=required) and spec.model.signature is not "
                "set; nothing was built"
            )
        keys = self._keys(namespace, signature)
        bundle_file = self._fetch(signature.uri)
        try:
            bundle = json.loads(bundle_file.read_bytes())
            stated = str(bundle["verificationMaterial"]["publicKey"]["hint"])
        except (ValueError, KeyError, TypeError) as err:
            raise ModelSignatureInvalid(
                f"{signature.uri} is not a model-signing bundle made with a key: {err!r}"
            ) from err
        key = next((k for k in keys if hint(k) == stated), None)
        if key is None:
            trusted = ", ".join(f"{k.name} ({key_id(k.key)})" for k in keys)
            raise ModelSignatureInvalid(
                f"signed by another key: {signature.uri} was made with a key whose hint is "
                f"{stated[:12]}, which is not {trusted}; nothing was built"
            )
        self._check(model, bundle_file, key, bundle, sha256, signature.uri)
        return f"{key.name} ({key_id(key.key)})"

    def _keys(self, namespace: str, signature: ModelSignature) -> tuple[VerifyKey, ...]:
        if signature.key_secret_ref is None:
            if not self._trusted:
                raise ModelSignatureInvalid(
                    "no key to check the signature with: set spec.model.signature.keySecretRef "
                    "or give the operator trusted keys (EDGEMODEL_MODEL_KEYS)"
                )
            return self._trusted
        key = _secret_key(self._secrets, namespace, signature)
        if self.required and hint(key) not in {hint(k) for k in self._trusted}:
            raise ModelSignatureInvalid(
                f"the operator requires models signed with the keys it trusts, and the key in "
                f"{key.name} ({key_id(key.key)}) is not one of them; nothing was built"
            )
        return (key,)

    def _fetch(self, uri: str) -> Path:
        name = hashlib.sha256(uri.encode()).hexdigest()[:16]
        try:
            return fetch(uri, self._work / "signatures" / name / "model.sig")
        except FetchError as err:
            raise ModelSignatureInvalid(
                f"missing signature: could not fetch spec.model.signature.uri: {err}; "
                "nothing was built"
            ) from err

    def _check(
        self, model: Path, bundle_file: Path, key: VerifyKey, bundle: dict[str, object],
        sha256: str, uri: str,
    ) -> None:  # fmt: skip
        try:
            from model_signing import verifying
        except ImportError as err:
            raise ModelSignatureInvalid(
                f"cannot verify model signatures: {err} (install edgemodel-operator[signing])"
            ) from err
        with tempfile.TemporaryDirectory(prefix="edgemodel-key-") as tmp:
            pem = Path(tmp) / "key.pub"
            pem.write_bytes(key.pem())
            # The hashing settings come from the signed statement itself.
            config = verifying.Config().use_elliptic_key_verifier(public_key=pem)
            try:
                config.verify(model, bundle_file)
            except InvalidSignature as err:
                raise ModelSignatureInvalid(
                    f"the signature in {uri} does not verify with {key.name}: the bundle was "
                    "altered or forged; nothing was built"
                ) from err
            except ValueError as err:
                signed = _signed_digests(bundle)
                if str(err).startswith("Signature mismatch") and signed:
                    raise ModelSignatureInvalid(
                        f"tampered model: the file (sha256 {sha256}) is not the one the "
                        f"publisher signed (sha256 {', '.join(signed)}); nothing was built"
                    ) from err
                raise ModelSignatureInvalid(f"{uri} does not verify: {err}") from err
            except Exception as err:  # a bundle model-signing cannot parse
                raise ModelSignatureInvalid(
                    f"{uri} is not a model-signing bundle: {type(err).__name__}: {err}"
                ) from err


def load_trusted(path: Path) -> tuple[VerifyKey, ...]:
    """The operator's trusted publisher keys (a PEM file or a folder of them)."""
    from edgemodel_operator.adapters.signing import load_public_keys

    try:
        return load_public_keys(path)
    except SigningKeyError as err:
        raise ModelSignatureInvalid(str(err)) from err
