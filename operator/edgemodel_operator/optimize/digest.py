"""sha256 of model files, read in chunks so large models never sit in memory whole."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from edgemodel_operator.optimize.errors import OptimizeError

CHUNK_BYTES = 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DigestMismatch(OptimizeError):
    """The file's sha256 is not the one expected (a corrupt or substituted artifact)."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(f"sha256 of {path.name} is {actual}, expected {expected}")
        self.path = path
        self.expected = expected
        self.actual = actual


def normalize(digest: str) -> str:
    """Lower-case hex without a "sha256:" prefix; ValueError if it is not 64 hex digits."""
    value = digest.strip().lower().removeprefix("sha256:")
    if not _HEX64.match(value):
        raise ValueError(f"not a sha256 digest (64 hex digits): {digest!r}")
    return value


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify(path: Path, expected: str) -> str:
    """Return the file's digest if it equals `expected`; raise DigestMismatch if not."""
    want = normalize(expected)
    actual = sha256_file(path)
    if actual != want:
        raise DigestMismatch(path, want, actual)
    return actual
