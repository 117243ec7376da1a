"""Shared by the signing tests: the real cosign (built once by hack/build-cosign.sh), keys
made here, a model publisher that signs with OpenSSF model-signing, and running cosign
offline against the local registry."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from imagekit_support import record

ROOT = Path(__file__).resolve().parents[2]


def cosign_binary() -> Path:
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "hack" / "build-cosign.sh")], capture_output=True,
                            text=True, check=False)  # fmt: skip
    record("hack/build-cosign.sh", time.monotonic() - started)
    if result.returncode != 0:
        pytest.fail(f"hack/build-cosign.sh failed:\n{result.stderr[-3000:]}", False)
    return Path(result.stdout.strip())


@dataclass(frozen=True)
class KeyPair:
    private: Path  # PEM PKCS#8, encrypted with `password` when it is set
    public: Path
    password: str = ""


def key_pair(folder: Path, name: str, password: str = "") -> KeyPair:
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())  # fmt: skip
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    pkcs8 = serialization.PrivateFormat.PKCS8
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, encryption))
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, spki))
    return KeyPair(private, public, password)


def sign_model(publisher: KeyPair, model: Path, bundle: Path) -> Path:
    """What a model publisher runs: model-signing with its elliptic-curve key."""
    from model_signing import signing

    signing.Config().use_elliptic_key_signer(private_key=publisher.private).sign(model, bundle)
    return bundle


@dataclass(frozen=True)
class Cosign:
    binary: Path

    def run(self, *args: str, password: str = "") -> subprocess.CompletedProcess[str]:
        """cosign offline: no transparency log, plain HTTP to the local registry."""
        env = {**os.environ, "COSIGN_PASSWORD": password, "COSIGN_YES": "true",
               "HOME": os.environ.get("HOME", "/tmp")}  # fmt: skip
        started = time.monotonic()
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                                env=env, timeout=120, check=False)  # fmt: skip
        record(f"cosign {args[0]}", time.monotonic() - started)
        return result

    def verify(self, key: Path, reference: str) -> subprocess.CompletedProcess[str]:
        return self.run("verify", "--key", str(key), "--insecure-ignore-tlog=true",
                        "--allow-insecure-registry", "--output", "json", reference)  # fmt: skip

    def verify_sbom(self, key: Path, reference: str) -> subprocess.CompletedProcess[str]:
        return self.run("verify-attestation", "--key", str(key), "--insecure-ignore-tlog=true",
                        "--allow-insecure-registry", "--type", "cyclonedx", reference)  # fmt: skip


def attested_sboms(stdout: str) -> list[dict[str, Any]]:
    """The CycloneDX predicates of the statements `cosign verify-attestation` printed."""
    boms = []
    for line in stdout.splitlines():
        if line.strip().startswith("{"):
            envelope = json.loads(line)
            body = json.loads(base64.b64decode(envelope["payload"]))
            assert body["predicateType"] == "https://cyclonedx.org/bom"
            boms.append(body["predicate"])
    return boms
