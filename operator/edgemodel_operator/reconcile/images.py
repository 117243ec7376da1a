"""Which images a spec needs and what they are called: content-addressed tags, so that the
same model, precision and server image always name the same image (and a registry that
already holds it means nothing to build)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edgemodel_operator.api.spec import ModelSignature, Validation
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
    validation: Validation | None = None  # spec.model.validation; overrides the two above
    signature: ModelSignature | None = None  # spec.model.signature: verified before anything


@dataclass(frozen=True)
class ImageState:
    state: Literal["Ready", "Building", "Failed"]
    reference: str = ""  # repository@sha256:..., when Ready
    size_bytes: int = 0
    reason: str = ""  # when Failed: ModelDigestMismatch, AccuracyGateFailed, ...
    message: str = ""  # progress while Building, the cause when Failed
    terminal: bool = False  # Failed for good: the same inputs fail the same way
    platforms: tuple[tuple[str, str], ...] = ()  # (arch, smoke test), when Ready
    model: dict[str, Any] | None = None  # the variant's figures (optimize.assess), if known
    signature: str = ""  # how the index's signature checked out (reconcile/signatures.py)


def validation_condition(
    has_validation: bool, samples_uri: str | None, figures: Mapping[str, Mapping[str, Any] | None]
) -> tuple[bool, str, str] | None:
    """(status, reason, message) of the Validated condition once the images are Ready, from
    spec.model.validation and each variant's figures; None when the spec asks for no gate."""
    if not has_validation:
        return None
    if not samples_uri:
        return (False, "NoSamples", "spec.model.validation sets thresholds but no samplesUri: "
                "the accuracy gate did not run and no variant was checked")  # fmt: skip
    checked, unknown = [], []
    for key, fig in sorted(figures.items()):
        gate = (fig or {}).get("validation")
        if key.endswith("/fp32"):
            continue  # the original itself
        if not gate:
            unknown.append(key)
            continue
        checked.append(f"{key} {gate.get('metric')} {gate.get('value')} vs fp32 "
                       f"{gate.get('fp32')} (drop {gate.get('drop')})")  # fmt: skip
    if unknown:
        return (False, "NotMeasured", f"no gate figures for {', '.join(unknown)} (images found "
                "already built by an earlier operator); " + "; ".join(checked))  # fmt: skip
    return (True, "GatePassed", "; ".join(checked) or "only fp32 variants: nothing to check")
