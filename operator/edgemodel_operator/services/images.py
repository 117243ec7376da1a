"""The image pipeline: fetch the model, verify its sha256, make the variant (fp16, int8),
check it still answers like the original, then have the builder make its image: the
accelerator's published server index plus the model, smoke-tested on every platform.

Builds take minutes, so they run on a worker thread; reconcile() only asks `state()` and
gets Ready (a digest-pinned index), Building (with the latest progress line) or Failed
(terminal for a wrong digest, a failed accuracy gate or a failing smoke test; retried with
backoff for everything else, such as an unreachable registry). Images are content-
addressed: the same model, variant and server image always name the same image, so a
registry that has it means nothing to fetch or build.

With signing configured: the publisher's signature of the model is verified before
anything is optimized or built (also for an image the registry already has); a built image
is signed and its SBOM attested after the push; and a Ready image is verified with the
configured keys before it is handed to the planner (reconcile/signatures.py decides, per the
namespace's policy, whether it may be pinned)."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from edgemodel_operator.adapters.docker_engine import DockerEngine
from edgemodel_operator.adapters.fetch import FetchError, fetch
from edgemodel_operator.adapters.image_errors import ImageError, SmokeTestFailed
from edgemodel_operator.adapters.model_images import (
    BuiltImage,
    DockerModelBuilder,
    ModelBuilder,
    ModelImageRequest,
    RegistryModelBuilder,
)
from edgemodel_operator.adapters.registry import Registry
from edgemodel_operator.adapters.unpacked import UnpackedRunner
from edgemodel_operator.api import conditions as c
from edgemodel_operator.api.spec import ModelSignature, Validation
from edgemodel_operator.config import BuildConfig
from edgemodel_operator.optimize import OptimizeError, Samples, assess, load_samples, optimize
from edgemodel_operator.optimize.digest import sha256_file
from edgemodel_operator.optimize.plan import gate_plan
from edgemodel_operator.reconcile.images import ImageJob, ImageState, image_tag, repository
from edgemodel_operator.reconcile.signatures import SignaturePolicy, Verdict, gate

LOG = structlog.get_logger("edgemodel_operator.images")
RETRY_SECONDS = (15, 30, 60, 120, 300, 600)


class TerminalFailure(Exception):
    """The same inputs fail the same way. `recheck`: unless something outside the spec
    changes (a Secret's key): checked again with backoff, the failure shown meanwhile."""

    def __init__(self, reason: str, message: str, recheck: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.recheck = recheck


class BuildStopped(Exception):
    """The EdgeModel was deleted: its build stops at its next step, before its image is
    tagged (services: ImagePipeline.stop)."""


class ModelChecks(Protocol):
    """The publisher's signature of a model (adapters.model_signatures.ModelSignatures)."""

    def applies(self, signature: ModelSignature | None) -> bool: ...

    def verify(
        self, namespace: str, sha256: str, signature: ModelSignature | None, model: Path
    ) -> str: ...


class Signer(Protocol):
    """Signs a pushed image and attests its SBOM (adapters.signing.ImageSigner)."""

    def sign(
        self, repository: str, index: str, platforms: Sequence[tuple[str, str]],
        progress: Callable[[str], None],
    ) -> Any: ...  # fmt: skip


class Verifier(Protocol):
    """Checks an image's signature by digest (adapters.signing.ImageVerifier)."""

    def verify(self, reference: str) -> Verdict: ...


@dataclass(frozen=True)
class Signing:
    """What the pipeline does about signatures; every part optional."""

    models: ModelChecks | None = None
    signer: Signer | None = None
    verifier: Verifier | None = None
    policy: SignaturePolicy = field(default_factory=SignaturePolicy)


@dataclass
class _Job:
    future: Future[BuiltImage]
    progress: str = "queued"
    attempts: int = 1
    retry_at: float = 0.0
    figures: dict[str, Any] | None = None  # the variant's figures (optimize.assess)
    shown: ImageState | None = None  # while rechecking: the failure being rechecked
    model: tuple[str, str] = ("", "")  # the EdgeModel's namespace and name
    stopped: threading.Event = field(default_factory=threading.Event)  # it was deleted


def registry_for(config: BuildConfig, timeout: float = 30.0) -> Registry:
    """The registry images are pushed to, with its credentials."""
    auth = _auth_from_file(config.auth_file, config.registry) if config.auth_file else None
    return Registry(insecure=config.registry_insecure, auth=auth, timeout=timeout)


def builder_for(config: BuildConfig) -> ModelBuilder:
    """The registry-native builder (the default), or the Docker Engine API's."""
    auth = _auth_from_file(config.auth_file, config.registry) if config.auth_file else None
    registry = Registry(insecure=config.registry_insecure, auth=auth)
    if config.builder == "docker":
        engine = DockerEngine(config.docker_host, auth)
        return DockerModelBuilder(registry, engine, Path(config.context_dir))
    return RegistryModelBuilder(
        registry, UnpackedRunner(registry, Path(config.work_dir) / "rootfs")
    )


def _auth_from_file(path: str, registry: str) -> dict[str, str] | None:
    """username/password for the registry from a docker config.json (a mounted Secret)."""
    auths = json.loads(Path(path).read_text()).get("auths", {})
    entry = auths.get(registry.split("/")[0]) or {}
    if "auth" in entry:
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        return {"username": user, "password": password}
    if "username" in entry:
        return {"username": entry["username"], "password": entry.get("password", "")}
    return None


class ImagePipeline:
    def __init__(
        self,
        config: BuildConfig,
        builder: ModelBuilder,
        server_image: str,
        clock: Callable[[], float] = time.monotonic,
        signing: Signing = Signing(),
    ) -> None:
        self._config = config
        self._builder = builder
        self._signing = signing
        self._server_image = server_image  # "{accelerator}" is filled in
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-build")
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def server_of(self, job: ImageJob) -> str:
        return self._server_image.format(accelerator=job.variant.accelerator)

    def state(self, job: ImageJob) -> ImageState:
        """Where the image of `job` stands; starts (or restarts) its build when needed. A
        Ready image has been through the signature check the namespace's policy asks for."""
        found = self._state(job)
        policy = self._signing.policy.for_namespace(job.namespace)
        verifier = self._signing.verifier
        if found.state != "Ready" or policy == "off" or verifier is None:
            return found
        return gate(found, verifier.verify(found.reference), policy)

    def _state(self, job: ImageJob) -> ImageState:
        repo = repository(self._config.registry, job.namespace, job.model)
        key = f"{repo}:{job.sha256}:{job.variant.accelerator}/{job.variant.precision}"
        if job.signature is not None:  # another signature or key is another job
            ref = job.signature.key_secret_ref
            key += f":{job.signature.uri}:{ref.name + '/' + ref.key if ref else ''}"
        with self._lock:
            current = self._jobs.get(key)
            if current is None:
                self._jobs[key] = self._submit(job, repo, attempts=1)
                return ImageState("Building", message=f"Queued the build of {key}")
            if not current.future.done():
                return current.shown or ImageState("Building", message=current.progress)
            error = current.future.exception()
            if error is None:
                built = current.future.result()
                platforms = tuple((p.arch, p.smoke_test) for p in built.platforms)
                return ImageState("Ready", reference=built.reference,
                                  size_bytes=built.size_bytes, platforms=platforms,
                                  model=current.figures)  # fmt: skip
            if isinstance(error, TerminalFailure):
                failed = ImageState("Failed", reason=error.reason, message=str(error),
                                    terminal=True)  # fmt: skip
                if error.recheck and self._clock() >= current.retry_at:
                    self._jobs[key] = self._submit(job, repo, current.attempts + 1, failed)
                return failed
            if self._clock() >= current.retry_at:
                self._jobs[key] = self._submit(job, repo, attempts=current.attempts + 1)
                return ImageState("Building", message=f"Retrying the build of {key}")
            wait = current.retry_at - self._clock()
            return ImageState(
                "Failed",
                reason="BuildFailed",
                message=f"{error} (attempt {current.attempts}; retrying in {wait:.0f}s)",
            )

    def stop(self, namespace: str, model: str) -> None:
        """The EdgeModel is gone: forget its builds. A queued one never starts; a running one
        stops at its next step (each step reports its progress first), so nothing is tagged
        or pushed for it afterwards, and the build thread is free for the next model."""
        with self._lock:
            mine = {k: j for k, j in self._jobs.items() if j.model == (namespace, model)}
            for key, record in mine.items():
                del self._jobs[key]
                record.stopped.set()
                if record.future.cancel():
                    LOG.info(f"Stopped the build of {key} before it started: the EdgeModel "
                             "was deleted", namespace=namespace, name=model)  # fmt: skip

    def _submit(
        self, job: ImageJob, repo: str, attempts: int, shown: ImageState | None = None
    ) -> _Job:
        record = _Job(future=Future(), attempts=attempts, shown=shown,
                      model=(job.namespace, job.model))  # fmt: skip
        delay = RETRY_SECONDS[min(attempts - 1, len(RETRY_SECONDS) - 1)]
        record.retry_at = float("inf")

        def progress(line: str) -> None:
            if record.stopped.is_set():
                raise BuildStopped(line)
            record.progress = line
            LOG.info(line, namespace=job.namespace, name=job.model, image=repo)

        def run() -> BuiltImage:
            try:
                progress("Starting the build")
                return self._make(job, repo, progress, record)
            except BuildStopped as stopped:
                LOG.warning(
                    f"Stopped the build of {repo} at {str(stopped)!r}: the EdgeModel was "
                    "deleted. No image was tagged; what was already uploaded (layers, "
                    "manifests by digest) is referenced by no tag and goes with the "
                    "registry's garbage collection",
                    namespace=job.namespace, name=job.model, image=repo,
                )  # fmt: skip
                raise
            except OSError as err:
                record.retry_at = self._clock() + delay
                if err.errno != errno.ENOSPC:
                    raise
                where = f" writing {err.filename}" if err.filename else ""
                raise ImageError(
                    f"No space left on device{where} at {record.progress!r}: free some space "
                    f"or give the work directory ({self._config.work_dir}) more"
                ) from err
            except Exception:
                record.retry_at = self._clock() + delay
                raise

        record.future = self._pool.submit(run)
        return record

    def _make(
        self, job: ImageJob, repo: str, progress: Callable[[str], None], record: _Job
    ) -> BuiltImage:
        server = self.server_of(job)
        tag = image_tag(job.sha256, job.variant, self._builder.server_digest(server))
        work = Path(self._config.work_dir)
        out = work / "variants" / job.sha256 / job.variant.accelerator
        figures_file = out / f"figures-{job.variant.precision}.json"
        models = self._signing.models
        if models is not None and models.applies(job.signature):
            self._verify_model(models, job, self._model(job, work, progress), progress)
        elif job.signature is not None:
            raise TerminalFailure(c.MODEL_SIGNATURE_INVALID, "spec.model.signature is set, but "
                                  "this operator does not verify model signatures; nothing "
                                  "was built")  # fmt: skip
        existing = self._builder.find(repo, tag)
        if existing is not None:  # content-addressed: nothing to fetch or build
            progress(f"{repo}:{tag} is already in the registry")
            if figures_file.is_file():
                record.figures = json.loads(figures_file.read_text())
            return self._signed(existing, progress)
        model = self._model(job, work, progress)
        validation = job.validation or (
            Validation(job.samples_uri, job.max_accuracy_drop) if job.samples_uri else None
        )
        progress(f"Making the {job.variant.precision} variant")
        try:
            plan = gate_plan(
                validation,
                self._samples(validation.samples_uri, work) if validation else None,
                self._samples(validation.calibration_uri, work) if validation else None,
            )
            variant = optimize(model, job.variant.precision, out, plan.calibration,
                               accelerator=job.variant.accelerator)  # fmt: skip
            assessed = assess(model, variant, plan.evaluation, plan.thresholds,
                              job.variant.accelerator)  # fmt: skip
        except OptimizeError as err:
            raise TerminalFailure("OptimizeFailed", str(err)) from err
        record.figures = assessed.figures
        figures_file.write_text(json.dumps(assessed.figures))
        if assessed.verdict is not None:
            progress(f"Accuracy gate: {assessed.verdict.message}")
            if not assessed.verdict.passed:
                raise TerminalFailure("AccuracyGateFailed", assessed.verdict.message)
        request = ModelImageRequest(
            model_file=variant.path,
            model_name=job.model,
            model_version=job.version,
            accelerator=job.variant.accelerator,
            precision=job.variant.precision,
            server_image=server,
            repository=repo,
            tag=tag,
        )
        try:
            built = self._builder.build(request, progress)
        except SmokeTestFailed as err:
            raise TerminalFailure("SmokeTestFailed", str(err)) from err
        return self._signed(built, progress)

    def _verify_model(
        self, models: ModelChecks, job: ImageJob, model: Path, progress: Callable[[str], None]
    ) -> None:
        from edgemodel_operator.adapters.model_signatures import ModelSignatureInvalid

        progress("Verifying the publisher's signature of the model")
        try:
            signer = models.verify(job.namespace, job.sha256, job.signature, model)
        except ModelSignatureInvalid as err:
            raise TerminalFailure(c.MODEL_SIGNATURE_INVALID, str(err), recheck=True) from err
        progress(f"The model's signature verified with {signer}")

    def _signed(self, built: BuiltImage, progress: Callable[[str], None]) -> BuiltImage:
        """Sign the index and its platform images, attest their SBOMs (what is there
        already is not written again)."""
        if self._signing.signer is not None:
            repo = built.reference.partition("@")[0]
            platforms = [(p.arch, p.digest) for p in built.platforms]
            self._signing.signer.sign(repo, built.digest, platforms, progress)
        return built

    def _samples(self, uri: str | None, work: Path) -> Samples | None:
        if not uri:
            return None
        name = hashlib.sha256(uri.encode()).hexdigest()[:16]
        path = work / "samples" / f"{name}.npz"
        try:
            return load_samples(path if path.is_file() else fetch(uri, path))
        except FetchError as err:
            raise ImageError(f"Could not fetch the samples: {err}") from err

    def _model(self, job: ImageJob, work: Path, progress: Callable[[str], None]) -> Path:
        path = work / "models" / job.sha256 / "model.onnx"
        if path.is_file() and sha256_file(path) == job.sha256:
            return path
        progress(f"Fetching {job.uri}")
        try:
            fetched = fetch(job.uri, path.with_suffix(".download"))
        except FetchError as err:
            raise ImageError(f"Could not fetch the model: {err}") from err
        actual = sha256_file(fetched)
        if actual != job.sha256:
            fetched.unlink(missing_ok=True)
            raise TerminalFailure(
                "ModelDigestMismatch",
                f"{job.uri} has sha256 {actual}, but spec.model.sha256 is {job.sha256}; "
                "nothing was built",
            )
        fetched.replace(path)
        return path

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
