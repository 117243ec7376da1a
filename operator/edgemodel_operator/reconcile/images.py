"""Which images a spec needs and what they are called: content-addressed tags, so that the
same model, precision and server image always name the same image (and a registry that
already holds it means nothing to build)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edgemodel_operator.reconcile.placement import Placement
from edgemodel_operator.reconcile.revision import digest


@dataclass(frozen=True, order=True)
class Variant:
    accelerator: str
    precision: str


def variants(placements: Sequence[Placement]) -> list[Variant]:
    """The (accelerator, precision) images the placed targets run; targets that bring their
    own image need none."""
    return sorted({Variant(p.accelerator, p.precision) for p in placements if not p.target.image})


def image_tag(sha256: str, variant: Variant, server_digest: str) -> str:
    """The tag of a model image: the model, its variant and the server index it extends."""
    key = digest([sha256, variant.accelerator, variant.precision, server_digest], 12)
    return f"{variant.accelerator}-{variant.precision}-{key}"


def repository(registry: str, namespace: str, model: str) -> str:
    return f"{registry}/{namespace}/{model}"


@dataclass(frozen=True)
class ImageJob:
    """One image to have: this model made into this variant, for this EdgeModel."""

    namespace: str
    model: str
    uri: str
    sha256: str
    version: str
    variant: Variant
    samples_uri: str | None = None
    max_accuracy_drop: float = 0.01


@dataclass(frozen=True)
class ImageState:
    state: Literal["Ready", "Building", "Failed"]
    reference: str = ""  # repository@sha256:..., when Ready
    size_bytes: int = 0
    reason: str = ""  # when Failed: ModelDigestMismatch, AccuracyGateFailed, ...
    message: str = ""  # progress while Building, the cause when Failed
    terminal: bool = False  # Failed for good: the same inputs fail the same way
    platforms: tuple[tuple[str, str], ...] = ()  # (arch, smoke test), when Ready
