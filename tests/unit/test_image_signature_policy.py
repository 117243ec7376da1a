"""Verified before pinned: the image pipeline checks a built image's signature, the
namespace's policy (off, warn, enforce) decides, and the planner pins, warns or holds. Here
with a fake builder and verifier; the real cosign formats against a real registry are in
tests/imagekit/test_signed_images.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fixtures import FLEET, edgemodel
from test_service import RecordingWriter

from edgemodel_operator.config import BuildConfig, ConfigError, load_config
from edgemodel_operator.reconcile.images import ImageState
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.signatures import SignaturePolicy, Verdict, gate
from edgemodel_operator.services.images import ImagePipeline, Signing
from edgemodel_operator.services.reconcile import Ports, reconcile
from edgemodel_operator.wiring import plan_settings

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = plan_settings(load_config({}))
DIGEST = "sha256:" + "b" * 64
READY = ImageState("Ready", reference=f"reg.local:5000/line-3/digits@{DIGEST}", size_bytes=7)


class Builder:
    """The registry already has the image: nothing is fetched, optimized or built."""

    def find(self, repository: str, tag: str) -> Any:
        from edgemodel_operator.adapters.model_images import BuiltImage, PlatformImage

        platform = PlatformImage("amd64", "sha256:" + "1" * 64, "passed on CPUExecutionProvider")
        return BuiltImage(f"{repository}@{DIGEST}", DIGEST, 7, (platform,), False)

    def build(self, request: Any, progress: Any) -> Any:
        raise AssertionError("nothing should be built")

    def server_digest(self, server_image: str) -> str:
        return "sha256:" + "5" * 64


class Verifier:
    def __init__(self, verdict: Verdict) -> None:
        self.verdict, self.asked = verdict, list[str]()

    def verify(self, reference: str) -> Verdict:
        self.asked.append(reference)
        return self.verdict


FOREIGN = Verdict(False, "has 1 signature(s), none by a trusted key (site.pub): signed by "
                  "another key")  # fmt: skip
GOOD = Verdict(True, "verified with key site.pub (0123456789ab)")


def pipeline(tmp: Path, verifier: Verifier, policy: SignaturePolicy) -> ImagePipeline:
    config = BuildConfig("registry", "reg.local:5000", True, "", str(tmp / "work"))
    return ImagePipeline(config, Builder(), "reg.local:5000/edgemodel-server:0.1.0-{accelerator}",
                         signing=Signing(verifier=verifier, policy=policy))  # fmt: skip


def settle(images: ImagePipeline, body: dict[str, Any], writer: RecordingWriter) -> Any:
    """Reconcile until the build (a registry hit) is done."""
    for _ in range(200):
        observed = Observed(FLEET, writer.children(1), [])
        done = reconcile(body, observed, Ports(writer, images), SETTINGS, T0)
        building = any(c.get("reason") == "Building" for c in done.status.get("conditions", []))
        if not building:
            return done
        import time

        time.sleep(0.02)
    raise AssertionError("the fake build did not finish")


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_the_gate_per_policy() -> None:
    assert gate(READY, FOREIGN, "off") == READY
    assert gate(READY, GOOD, "enforce").signature == GOOD.message
    warned = gate(READY, FOREIGN, "warn")
    assert warned.state == "Ready"
    assert warned.signature == "not verified (policy warn): " + FOREIGN.message
    held = gate(READY, FOREIGN, "enforce")
    assert (held.state, held.reason, held.terminal) == ("Failed", "ImageSignatureInvalid", True)
    assert held.message.startswith(f"{READY.reference} was not pinned: its signature did not "
                                   "verify (policy enforce): has 1 signature(s)")  # fmt: skip
    building = ImageState("Building", message="Appending the model")
    assert gate(building, FOREIGN, "enforce") == building  # nothing to check yet
    policy = SignaturePolicy("warn", {"line-3": "enforce", "lab": "off"})
    assert [policy.for_namespace(n) for n in ("line-3", "lab", "other")] == [
        "enforce", "off", "warn"]  # fmt: skip


def test_an_image_signed_by_another_key_is_not_pinned_and_what_serves_stays(
    tmp_path: Path,
) -> None:
    verifier = Verifier(GOOD)
    images = pipeline(tmp_path, verifier, SignaturePolicy("off", {"line-3": "enforce"}))
    writer = RecordingWriter()
    body = edgemodel()
    first = settle(images, body, writer)
    assert writer.workload["spec"]["template"]["spec"]["containers"][0]["image"] == READY.reference
    assert first.status["images"][0]["signature"] == GOOD.message
    assert verifier.asked[-1] == READY.reference

    verifier.verdict = FOREIGN  # the registry now holds an image signed by someone else
    writer.applied.clear()
    held = settle(images, {**body, "status": first.status}, writer)
    assert writer.applied == [] and writer.deleted == []  # nothing pinned, nothing removed
    running = writer.live[("Deployment", "digits-cpu")]
    assert running["spec"]["template"]["spec"]["containers"][0]["image"] == READY.reference
    assert held.status["phase"] == "Failed"
    for type_ in ("ImagesReady", "Degraded"):
        assert cond(held.status, type_)["reason"] == "ImageSignatureInvalid"
    assert "signed by another key" in cond(held.status, "Degraded")["message"]
    assert [(e.type, e.reason) for e in held.events] == [("Warning", "ImageSignatureInvalid")]


def test_warn_pins_and_says_so_once(tmp_path: Path) -> None:
    images = pipeline(tmp_path, Verifier(FOREIGN), SignaturePolicy("warn"))
    writer = RecordingWriter()
    body = edgemodel()
    first = settle(images, body, writer)
    assert writer.workload["spec"]["template"]["spec"]["containers"][0]["image"] == READY.reference
    (image,) = first.status["images"]
    assert image["signature"].startswith("not verified (policy warn): has 1 signature(s)")
    warnings = [e for e in first.events if e.reason == "ImageSignatureInvalid"]
    assert [w.type for w in warnings] == ["Warning"]
    assert READY.reference in warnings[0].message
    again = settle(images, {**body, "status": first.status}, writer)
    assert not [e for e in again.events if e.reason == "ImageSignatureInvalid"]


def test_off_checks_nothing(tmp_path: Path) -> None:
    verifier = Verifier(FOREIGN)
    writer = RecordingWriter()
    done = settle(pipeline(tmp_path, verifier, SignaturePolicy("off")), edgemodel(), writer)
    assert verifier.asked == [] and "signature" not in done.status["images"][0]


def test_a_signed_model_is_not_rolled_out_by_an_operator_that_cannot_verify_it() -> None:
    writer = RecordingWriter()
    body = edgemodel()
    body["spec"]["model"]["signature"] = {"uri": "https://models.example.com/digits.sig"}
    done = reconcile(body, Observed(FLEET, [], []), Ports(writer), SETTINGS, T0)
    assert writer.applied == []
    degraded = cond(done.status, "Degraded")
    assert degraded["reason"] == "ModelSignatureInvalid"
    assert "builds no images (EDGEMODEL_BUILDER=off)" in degraded["message"]


def test_signing_settings_are_checked_at_start() -> None:
    builds = {"EDGEMODEL_REGISTRY_URL": "reg.local:5000"}
    signing = load_config({**builds, "EDGEMODEL_IMAGE_SIGNING_KEY": "/keys/cosign.key"})
    assert signing.builds is not None
    assert signing.builds.signing.image_policy == "enforce"  # keys given: enforced by default
    assert load_config(builds).builds.signing.image_policy == "off"  # type: ignore[union-attr]
    namespaces = load_config(
        {
            **builds,
            "EDGEMODEL_IMAGE_VERIFY_KEYS": "/keys",
            "EDGEMODEL_IMAGE_SIGNATURE_POLICY": "warn",
            "EDGEMODEL_IMAGE_SIGNATURE_NAMESPACES": "line-3=enforce,lab=off",
        }
    )
    assert namespaces.builds.signing.image_namespace_policies == {  # type: ignore[union-attr]
        "line-3": "enforce", "lab": "off"}  # fmt: skip
    cases = {
        "EDGEMODEL_IMAGE_SIGNATURE_POLICY must be off, warn or enforce, got 'strict'":
            {**builds, "EDGEMODEL_IMAGE_VERIFY_KEYS": "/k", "EDGEMODEL_IMAGE_SIGNATURE_POLICY":
             "strict"},
        "needs EDGEMODEL_IMAGE_VERIFY_KEYS or EDGEMODEL_IMAGE_SIGNING_KEY":
            {**builds, "EDGEMODEL_IMAGE_SIGNATURE_NAMESPACES": "line-3=enforce"},
        "EDGEMODEL_MODEL_SIGNATURE_POLICY=required needs EDGEMODEL_MODEL_KEYS":
            {**builds, "EDGEMODEL_MODEL_SIGNATURE_POLICY": "required"},
        "apply to images the operator builds, and builds are off":
            {"EDGEMODEL_IMAGE_SIGNING_KEY": "/keys/cosign.key"},
    }  # fmt: skip
    for message, env in cases.items():
        try:
            load_config(env)
        except ConfigError as err:
            assert message in str(err), err
        else:
            raise AssertionError(f"accepted {env}")
