"""Which images a spec needs and what they are called: content-addressed tags, so that the
same model, precision and server image always name the same image (and a registry that
already holds it means nothing to build)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from edgemodel_operator.api import conditions as c
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


def add_image_status(
    status: dict[str, Any], images: Mapping[str, ImageState], validation: Validation | None,
    generation: int, now: datetime,
) -> None:  # fmt: skip
    """What Ready images add to the status: status.images (reference, size, platforms with
    their smoke tests, the variant's figures and signature), the ImagesReady condition and,
    when the spec asks for an accuracy gate, the Validated condition."""
    pinned = {k: s.reference for k, s in images.items()}
    built = ", ".join(f"{k} {ref}" for k, ref in sorted(pinned.items())) or "none needed"
    status["conditions"] = c.set_condition(status["conditions"], c.IMAGES_READY, True,
                                           c.IMAGES_BUILT, f"Images ready: {built}",
                                           generation, now)  # fmt: skip
    status["images"] = [
        {"variant": k, "image": ref, "sizeBytes": images[k].size_bytes,
         "platforms": [{"architecture": arch, "smokeTest": smoke}
                       for arch, smoke in images[k].platforms],
         **({"model": images[k].model} if images[k].model else {}),
         **({"signature": images[k].signature} if images[k].signature else {})}
        for k, ref in sorted(pinned.items())
    ]  # fmt: skip
    validated = validation_condition(validation is not None,
                                     validation.samples_uri if validation else None,
                                     {k: s.model for k, s in images.items()})  # fmt: skip
    if validated is not None:
        status["conditions"] = c.set_condition(status["conditions"], c.VALIDATED, *validated,
                                               generation, now)  # fmt: skip


def pending_status(
    previous: Mapping[str, Any], states: Mapping[str, ImageState], generation: int, now: datetime
) -> dict[str, Any]:
    """Status while images are built or failed: nothing is applied, what runs keeps running."""
    failed = {k: s for k, s in states.items() if s.state == "Failed"}
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    if failed:
        key, first = sorted(failed.items())[0]
        message = f"Image {key}: {first.message}"
        conds = c.set_condition(
            conds, c.IMAGES_READY, False, first.reason, message, generation, now
        )
        conds = c.set_condition(conds, c.DEGRADED, True, first.reason, message, generation, now)
        phase = "Failed" if first.terminal else "Building"
    else:
        building = "; ".join(f"{k}: {s.message}" for k, s in sorted(states.items())
                             if s.state == "Building")  # fmt: skip
        conds = c.set_condition(conds, c.IMAGES_READY, False, c.BUILDING, building, generation, now)
        phase = "Building"
    return {**previous, "observedGeneration": generation, "phase": phase, "conditions": conds}
