"""A server image unpacked for the smoke test onto a full disk: what was unpacked is
removed at once, not left to keep the disk full until the build is retried."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from edgemodel_operator.adapters import unpacked


class Blobs:
    def blob(self, repository: str, digest: str) -> bytes:
        return b"layer"


def test_a_full_disk_leaves_nothing_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fill(layers: Any, target: Path) -> None:
        (target / "usr").mkdir()
        (target / "usr" / "python3").write_bytes(b"x" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(unpacked, "unpack", fill)
    runner = unpacked.UnpackedRunner(Blobs(), tmp_path / "rootfs")  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No space left"):
        runner._rootfs("reg/server", ["sha256:" + "1" * 64], lambda _: None)
    assert list((tmp_path / "rootfs").iterdir()) == []
