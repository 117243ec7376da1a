"""Image signature policy as data: which policy holds in a namespace (off, warn, enforce),
and what a verification's verdict makes of a built image before it is pinned. The
verification itself (registry reads, cryptography) is done by the image pipeline; the
planner only sees its outcome in ImageState."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from edgemodel_operator.api import conditions as c
from edgemodel_operator.reconcile.images import ImageState
from edgemodel_operator.reconcile.status import EventSpec

POLICIES = ("off", "warn", "enforce")
NOT_VERIFIED = "not verified (policy warn): "


@dataclass(frozen=True)
class SignaturePolicy:
    """Operator-wide default, and namespaces that differ from it."""

    default: str = "off"
    namespaces: Mapping[str, str] = field(default_factory=dict)

    def for_namespace(self, namespace: str) -> str:
        return self.namespaces.get(namespace, self.default)


@dataclass(frozen=True)
class Verdict:
    verified: bool
    message: str  # "verified with key <name>", or why not


def gate(state: ImageState, verdict: Verdict | None, policy: str) -> ImageState:
    """The image as the planner may use it: unchanged when nothing is checked; noted when
    verified or, under warn, when not; under enforce an unverified image is not pinned
    (Failed, ImageSignatureInvalid: the rollout holds and what serves keeps serving)."""
    if policy == "off" or state.state != "Ready" or verdict is None:
        return state
    if verdict.verified:
        return replace(state, signature=verdict.message)
    if policy == "warn":
        return replace(state, signature=NOT_VERIFIED + verdict.message)
    return ImageState(
        "Failed", reason=c.IMAGE_SIGNATURE_INVALID, terminal=True,
        message=f"{state.reference} was not pinned: its signature did not verify "
        f"(policy enforce): {verdict.message}; what serves keeps serving",
    )  # fmt: skip


def signature_events(
    previous: Sequence[Mapping[str, Any]], images: Sequence[Mapping[str, Any]]
) -> list[EventSpec]:
    """A Warning for each image pinned without a verified signature (policy warn), once:
    when its status entry first says so."""
    before = {(i.get("image"), i.get("signature")) for i in previous}
    return [
        EventSpec(
            "Warning",
            c.IMAGE_SIGNATURE_INVALID,
            f"Pinned {i['image']} ({i['variant']}) with a signature that did not verify: "
            f"{str(i['signature']).removeprefix(NOT_VERIFIED)}",
        )
        for i in images
        if str(i.get("signature", "")).startswith(NOT_VERIFIED)
        and (i.get("image"), i.get("signature")) not in before
    ]


def model_unverifiable(
    previous: Mapping[str, Any], generation: int, now: datetime
) -> dict[str, Any]:
    """Status for a spec with spec.model.signature on an operator that builds no images: it
    never reads the model, so it cannot verify it, and rolls nothing out (fails closed)."""
    message = ("spec.model.signature is set, but this operator builds no images "
               "(EDGEMODEL_BUILDER=off), so it never reads the model and cannot verify its "
               "signature; nothing was rolled out")  # fmt: skip
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    for type_, ok in ((c.PROGRESSING, False), (c.DEGRADED, True)):
        conds = c.set_condition(conds, type_, ok, c.MODEL_SIGNATURE_INVALID, message,
                                generation, now)  # fmt: skip
    return {**previous, "observedGeneration": generation, "phase": "Failed", "conditions": conds}
