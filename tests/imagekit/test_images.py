"""Model images end to end: the published multi-arch CPU server index (make images), the
digits model (int8) appended to it through the registry's API without a daemon, each
platform smoke-tested by running the image's own bits (arm64 under emulation), the same
model built through podman's Docker API for comparison, a model-only update as one new
layer, a broken model refused, and unreachable services named. Timings and sizes are
printed at the end of the run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from imagekit_support import Kit, record, report

from edgemodel_operator.adapters.docker_engine import DockerEngine
from edgemodel_operator.adapters.image_errors import RegistryError, SmokeTestFailed
from edgemodel_operator.adapters.model_images import (
    BuiltImage,
    DockerModelBuilder,
    ModelImageRequest,
    RegistryModelBuilder,
)
from edgemodel_operator.adapters.registry import Registry, split_reference
from edgemodel_operator.adapters.unpacked import UnpackedRunner
from edgemodel_operator.optimize import Variant

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(insecure=True)


@pytest.fixture(scope="module")
def daemonless(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> RegistryModelBuilder:
    return RegistryModelBuilder(
        registry, UnpackedRunner(registry, tmp_path_factory.mktemp("rootfs"))
    )


def request(kit: Kit, server: str, model: Path, name: str, version: str = "1") -> ModelImageRequest:
    return ModelImageRequest(
        model_file=model, model_name="digits", model_version=version, accelerator="cpu",
        precision="int8", server_image=server.format(accelerator="cpu"),
        repository=kit.repository(name), tag=f"v{version}",
    )  # fmt: skip


def layers(registry: Registry, image: BuiltImage, arch: str) -> list[str]:
    repo, _ = split_reference(image.reference)
    digest = next(p.digest for p in image.platforms if p.arch == arch)
    manifest = registry.manifest(repo, digest)
    assert manifest is not None
    return [layer.digest for layer in manifest.layers]


@pytest.fixture(scope="module")
def appended(
    imagekit: Kit, server_images: str, daemonless: RegistryModelBuilder, int8_model: Variant
) -> tuple[BuiltImage, list[str]]:
    lines: list[str] = []
    started = time.monotonic()
    image = daemonless.build(request(imagekit, server_images, int8_model.path, "digits"),
                             lines.append)  # fmt: skip
    record("daemonless: append + smoke test amd64 and arm64 (digits int8)",
           time.monotonic() - started)  # fmt: skip
    return image, lines


def test_the_server_index_serves_both_architectures(registry: Registry, server_images: str) -> None:
    repo, tag = split_reference(server_images.format(accelerator="cpu"))
    index = registry.manifest(repo, tag)
    assert index is not None and sorted(index.platforms or {}) == ["amd64", "arm64"]


def test_daemonless_build_appends_one_layer_and_runs_every_platform(
    appended: tuple[BuiltImage, list[str]], registry: Registry, server_images: str
) -> None:
    image, lines = appended
    assert image.built and image.reference.endswith(image.digest)
    smoke = {p.arch: p.smoke_test for p in image.platforms}
    assert smoke == {"amd64": "passed on CPUExecutionProvider",
                     "arm64": "passed on CPUExecutionProvider"}, lines  # fmt: skip
    repo, tag = split_reference(server_images.format(accelerator="cpu"))
    server = registry.manifest(repo, tag)
    assert server is not None and server.platforms
    for arch in ("amd64", "arm64"):
        base = registry.manifest(repo, server.platforms[arch])
        assert base is not None
        built = layers(registry, image, arch)
        assert built[:-1] == [layer.digest for layer in base.layers]  # the server's, shared
    assert layers(registry, image, "amd64")[-1] == layers(registry, image, "arm64")[-1]
    report(f"daemonless image (digits int8): {image.size_bytes / 1e6:.1f} MB compressed (amd64)")


def test_the_same_model_gives_the_same_digest_and_is_found_again(
    appended: tuple[BuiltImage, list[str]], daemonless: RegistryModelBuilder, imagekit: Kit,
    server_images: str, int8_model: Variant,
) -> None:  # fmt: skip
    image, _ = appended
    found = daemonless.find(imagekit.repository("digits"), "v1")
    assert found is not None and not found.built
    assert (found.digest, found.platforms) == (image.digest, image.platforms)
    again = daemonless.build(request(imagekit, server_images, int8_model.path, "digits-again"),
                             lambda _: None)  # fmt: skip
    assert again.digest == image.digest  # deterministic: another repository, same index


def test_a_model_update_is_one_new_layer(
    appended: tuple[BuiltImage, list[str]], daemonless: RegistryModelBuilder, imagekit: Kit,
    server_images: str, registry: Registry, tmp_path: Path,
) -> None:  # fmt: skip
    import digits

    image, _ = appended
    other = tmp_path / "v2"
    digits.make_digits.generate(other, seed=7)
    update = daemonless.build(request(imagekit, server_images, other / "model.onnx", "digits", "2"),
                              lambda _: None)  # fmt: skip
    old, new = layers(registry, image, "amd64"), layers(registry, update, "amd64")
    assert old[:-1] == new[:-1] and old[-1] != new[-1]
    repo, _ = split_reference(update.reference)
    digest = next(p.digest for p in update.platforms if p.arch == "amd64")
    manifest = registry.manifest(repo, digest)
    assert manifest is not None
    model_layer = manifest.layers[-1].size
    report(f"model-only update: {model_layer / 1e3:.1f} kB of {manifest.size_bytes / 1e6:.1f} MB")


def test_a_model_that_does_not_load_fails_the_smoke_test_and_is_not_tagged(
    daemonless: RegistryModelBuilder, imagekit: Kit, server_images: str, tmp_path: Path
) -> None:
    import broken

    model = broken.unloadable_model(tmp_path / "model.onnx")
    with pytest.raises(SmokeTestFailed, match="did not become ready") as failed:
        daemonless.build(request(imagekit, server_images, model, "broken"), lambda _: None)
    assert "ModelLoadFailed" in str(failed.value) or "could not load" in str(failed.value)
    assert daemonless.find(imagekit.repository("broken"), "v1") is None


def test_the_docker_builder_makes_the_same_image_through_the_docker_api(
    imagekit: Kit, server_images: str, registry: Registry, int8_model: Variant,
    appended: tuple[BuiltImage, list[str]],
) -> None:  # fmt: skip
    engine = DockerEngine(imagekit.docker_host)
    try:
        builder = DockerModelBuilder(registry, engine, ROOT / "images")
        started = time.monotonic()
        image = builder.build(request(imagekit, server_images, int8_model.path, "digits-docker"),
                              lambda _: None)  # fmt: skip
        record(
            "docker builder: build + smoke test + push, amd64 and arm64", time.monotonic() - started
        )
    finally:
        engine.close()
    daemonless_image, _ = appended
    assert {p.arch: p.smoke_test for p in image.platforms} == {
        "amd64": "passed on CPUExecutionProvider",
        "arm64": "passed on CPUExecutionProvider",
    }
    for arch in ("amd64", "arm64"):  # the server's layers are the same; only the model differs
        assert layers(registry, image, arch)[:-1] == layers(registry, daemonless_image, arch)[:-1]


def test_unreachable_registry_and_missing_server_are_named(
    daemonless: RegistryModelBuilder, imagekit: Kit, int8_model: Variant
) -> None:
    with pytest.raises(RegistryError, match="Could not reach the registry"):
        Registry(insecure=True).manifest("127.0.0.1:9/x", "latest")
    missing = request(imagekit, f"{imagekit.registry}/nothing-here:0-{{accelerator}}",
                      int8_model.path, "missing")  # fmt: skip
    with pytest.raises(RegistryError, match="make images"):
        daemonless.server_digest(missing.server_image)
