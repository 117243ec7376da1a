"""Errors of the image builder (adapters.images), all subclasses of ImageError.

Each message is meant for the person reading the EdgeModel's status: it names the image
and says what went wrong, with the last lines of the build or the container when they
explain it.
"""

from __future__ import annotations

from collections.abc import Sequence


class ImageError(Exception):
    """An image could not be built, tested, pushed or looked up."""


class BuildFailed(ImageError):
    """The build did not run or did not finish (bad context, base missing, a failing step)."""


class SmokeTestFailed(ImageError):
    """The built image did not start, become ready or answer one inference; nothing pushed."""

    def __init__(self, message: str, logs: Sequence[str] = ()) -> None:
        self.logs = tuple(logs)
        text = message
        if self.logs:
            text += "\nLast lines of the container's log:\n" + "\n".join(self.logs)
        super().__init__(text)


class PushFailed(ImageError):
    """The registry refused the image, or the push broke off."""


class RegistryError(ImageError):
    """The registry could not be reached or answered something unexpected."""


def tail(lines: Sequence[str], count: int = 15) -> str:
    """The last `count` non-empty lines, joined, for an error message."""
    kept = [line for line in lines if line.strip()][-count:]
    return "\n".join(kept)
