"""Model images: the accelerator's published server index plus one layer holding the
optimized model, for every platform the index has, smoke-tested and pushed.

Two builders make the same image:
- RegistryModelBuilder (the default): no daemon, no privileges. The model layer is
  appended through the registry's API; each platform image is then run unpacked with
  its own loader and Python (adapters/unpacked.py), arm64 under emulation where the host
  has it; where it cannot run, the result says so.
- DockerModelBuilder, for sites with a Docker Engine API: images/Dockerfile.model per
  platform, run in a container, pushed.
Both record each platform's smoke test in the index's annotations, so a registry that
already holds the image says how it was checked."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgemodel_operator.adapters.docker_engine import DockerEngine
from edgemodel_operator.adapters.image_errors import RegistryError, SmokeTestFailed
from edgemodel_operator.adapters.oip import Served
from edgemodel_operator.adapters.registry import (
    Registry,
    canonical,
    sha256_digest,
    split_reference,
    tar_layer,
)
from edgemodel_operator.adapters.unpacked import NotExecuted, UnpackedRunner

Progress = Callable[[str], None]
SMOKE_ANNOTATION = "dev.edgeai.smoke-test."  # + arch
CREATED = "2026-01-01T00:00:00Z"  # fixed: the same model always makes the same digests
# Where each accelerator's hardware shows up on a host; its absence means the smoke test
# can only answer on CPU, and says so, while its presence makes a CPU answer a failure.
DEVICES = {"gpu": ("/dev/nvidia0",), "npu": ("/dev/accel/accel0",)}
PROVIDERS = {"gpu": "CUDAExecutionProvider", "npu": "OpenVINOExecutionProvider"}


@dataclass(frozen=True)
class ModelImageRequest:
    model_file: Path
    model_name: str
    model_version: str
    accelerator: str
    precision: str
    server_image: str  # the accelerator's server index, repo:tag or repo@digest
    repository: str
    tag: str


@dataclass(frozen=True)
class PlatformImage:
    arch: str
    digest: str
    smoke_test: str  # passed on <provider> | cpu-fallback: ... | not executed: ...


@dataclass(frozen=True)
class BuiltImage:
    reference: str  # repository@<index digest>
    digest: str
    size_bytes: int  # compressed, of the amd64 image (else the first)
    platforms: tuple[PlatformImage, ...]
    built: bool  # False: the registry already had it


class ModelBuilder(Protocol):
    def find(self, repository: str, tag: str) -> BuiltImage | None: ...

    def build(self, request: ModelImageRequest, progress: Progress) -> BuiltImage: ...

    def server_digest(self, server_image: str) -> str: ...


def smoke_result(accelerator: str, served: Served) -> str:
    wanted = PROVIDERS.get(accelerator)
    if wanted and served.fell_back:
        if any(Path(d).exists() for d in DEVICES[accelerator]):
            raise SmokeTestFailed(
                f"the builder has the {accelerator} hardware, but the image answered on "
                f"{served.execution_provider} instead of {wanted}"
            )
        return (f"cpu-fallback: no {accelerator} on the builder; answered on "
                f"{served.execution_provider}, {wanted} is checked on the node")  # fmt: skip
    return f"passed on {served.execution_provider}"


def _environment(request: ModelImageRequest) -> dict[str, str]:
    return {
        "EDGEMODEL_MODEL_NAME": request.model_name,
        "EDGEMODEL_MODEL_VERSION": request.model_version,
        "EDGEMODEL_PRECISION": request.precision,
    }


def _labels(request: ModelImageRequest) -> dict[str, str]:
    return {
        "org.opencontainers.image.version": request.model_version,
        "dev.edgeai.model": request.model_name,
        "dev.edgeai.precision": request.precision,
    }


class _Lookup:
    registry: Registry

    def server_digest(self, server_image: str) -> str:
        repo, ref = split_reference(server_image)
        found = self.registry.raw_manifest(repo, ref)
        if found is None:
            raise RegistryError(
                f"The model-server image {server_image} is not in the registry; publish it "
                "with `make images` (python -m edgemodel_operator.servers)"
            )
        return sha256_digest(found[0])

    def find(self, repository: str, tag: str) -> BuiltImage | None:
        found = self.registry.raw_manifest(repository, tag)
        if found is None:
            return None
        index = json.loads(found[0])
        notes = index.get("annotations") or {}
        platforms = tuple(
            PlatformImage(arch, str(e["digest"]), notes.get(SMOKE_ANNOTATION + arch, ""))
            for e in index.get("manifests") or []
            if (arch := str(e.get("platform", {}).get("architecture")))
        )
        manifest = self.registry.manifest(repository, tag)
        size = manifest.size_bytes if manifest else 0
        digest = sha256_digest(found[0])
        return BuiltImage(f"{repository}@{digest}", digest, size, platforms, built=False)


def _tag_index(
    registry: Registry, repository: str, tag: str, media_type: str, index: Mapping[str, Any],
    platforms: tuple[PlatformImage, ...], size: int,
) -> BuiltImage:  # fmt: skip
    notes = {SMOKE_ANNOTATION + p.arch: p.smoke_test for p in platforms}
    body = canonical({**index, "annotations": {**(index.get("annotations") or {}), **notes}})
    digest = registry.put_manifest(repository, tag, body, media_type)
    return BuiltImage(f"{repository}@{digest}", digest, size, platforms, built=True)


class RegistryModelBuilder(_Lookup):
    def __init__(self, registry: Registry, runner: UnpackedRunner) -> None:
        self.registry = registry
        self._runner = runner

    def build(self, request: ModelImageRequest, progress: Progress) -> BuiltImage:
        progress(f"Appending the model to {request.server_image} through the registry API")
        layer = tar_layer({"models/model.onnx": request.model_file.read_bytes()},
                          mtime=0, created_by="COPY model.onnx /models/model.onnx")  # fmt: skip
        appended = self.registry.append_layer(
            request.server_image, request.repository, layer, _environment(request),
            _labels(request), CREATED,
        )  # fmt: skip
        platforms = []
        for image in appended.images:
            try:
                served = self._runner.serve_once(
                    request.repository, image.manifest, image.config, image.arch,
                    request.model_file, request.model_name, progress,
                    environment={"EDGEMODEL_CPU_FALLBACK": "true"},
                )  # fmt: skip
                result = smoke_result(request.accelerator, served)
            except NotExecuted as why:
                result = f"not executed: {why}"
            progress(f"Smoke test {image.arch}: {result}")
            platforms.append(PlatformImage(image.arch, image.digest, result))
        amd64 = next((i for i in appended.images if i.arch == "amd64"), appended.images[0])
        return _tag_index(self.registry, request.repository, request.tag, appended.media_type,
                          appended.index, tuple(platforms), amd64.size_bytes)  # fmt: skip


class DockerModelBuilder(_Lookup):
    def __init__(self, registry: Registry, engine: DockerEngine, context_dir: Path) -> None:
        self.registry = registry
        self._engine = engine
        self._dockerfile = context_dir / "Dockerfile.model"

    def build(self, request: ModelImageRequest, progress: Progress) -> BuiltImage:
        server_repo, server_ref = split_reference(request.server_image)
        index = self.registry.manifest(server_repo, server_ref)
        if index is None or not index.platforms:
            raise RegistryError(f"{request.server_image} is not a multi-platform index")
        platforms, sizes = [], {}
        for arch, server_digest in sorted(index.platforms.items()):
            tag = f"{request.tag}-{arch}"
            reference = f"{request.repository}:{tag}"
            with tempfile.TemporaryDirectory(prefix="edgemodel-model-") as tmp:
                shutil.copyfile(self._dockerfile, Path(tmp) / "Dockerfile.model")
                shutil.copyfile(request.model_file, Path(tmp) / "model.onnx")
                (Path(tmp) / "model.onnx").chmod(0o644)  # read by the server's user
                args = {
                    "SERVER_IMAGE": f"{server_repo}@{server_digest}",
                    "MODEL_NAME": request.model_name,
                    "MODEL_VERSION": request.model_version,
                    "PRECISION": request.precision,
                }
                # No build cache: podman reuses a step whose ENV comes from a build
                # argument after a build of the same context with another value (a model
                # built under one name then answered for another). The server's layers are
                # pulled, not built, so only the model's few steps run again.
                self._engine.build(
                    Path(tmp), reference, args, progress,
                    platform=f"linux/{arch}", dockerfile="Dockerfile.model", cache=False,
                )  # fmt: skip
            try:
                served = self._engine.serve_once(
                    reference, request.model_name, progress, platform=f"linux/{arch}",
                    environment={"EDGEMODEL_CPU_FALLBACK": "true"},
                )  # fmt: skip
                result = smoke_result(request.accelerator, served)
            except SmokeTestFailed:
                self._engine.remove(reference)
                raise
            self._engine.push(request.repository, tag, progress)
            pushed = self.registry.manifest(request.repository, tag)
            if pushed is None:
                raise RegistryError(f"Pushed {reference}, but the registry does not list it")
            platforms.append(PlatformImage(arch, pushed.digest, result))
            sizes[arch] = pushed.size_bytes
            with contextlib.suppress(Exception):
                self._engine.remove(reference)
        entries = [(p.arch, p.digest) for p in platforms]
        digest = self.registry.put_index(request.repository, request.tag, entries,
                                         {SMOKE_ANNOTATION + p.arch: p.smoke_test
                                          for p in platforms})  # fmt: skip
        size = sizes.get("amd64") or next(iter(sizes.values()))
        return BuiltImage(f"{request.repository}@{digest}", digest, size, tuple(platforms), True)
