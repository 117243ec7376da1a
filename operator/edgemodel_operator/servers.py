"""Build and publish the model-server images: one multi-arch index per accelerator, from
the image profiles (images/profiles/*.yaml), through a Docker Engine API (podman's works).

    python -m edgemodel_operator.servers --registry registry.local:5000 [--insecure]
        [--accelerators cpu,gpu,npu] [--platforms amd64,arm64]
        [--base amd64=IMAGE,arm64=IMAGE] [--out published.json]

For each profile and platform: download its wheels (cached), build images/Dockerfile for
that platform (arm64 under emulation when the host has binfmt for it), smoke-test it with
a small model (one real inference; "cpu-fallback" when the host lacks the accelerator),
and push it under a content-addressed tag, so an unchanged image is never rebuilt. Then
the index <registry>/edgemodel-server:<version>-<accelerator> names every platform built.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgemodel_operator import __version__
from edgemodel_operator.adapters import wheels
from edgemodel_operator.adapters.docker_engine import DockerEngine
from edgemodel_operator.adapters.image_errors import ImageError
from edgemodel_operator.adapters.model_images import smoke_result
from edgemodel_operator.adapters.registry import Registry
from edgemodel_operator.api.profiles import PLATFORMS, Profile, ProfileError, load_profiles

REPOSITORY = "edgemodel-server"
DEFAULT_BASE = "python:3.11-slim-bookworm"
SMOKE_MODEL = "smoke"


@dataclass
class PlatformResult:
    arch: str
    profile: str
    reference: str = ""  # repository@digest of the platform image
    size_bytes: int = 0
    built: bool = False  # False: the registry already had it
    smoke_test: str = ""  # passed on <provider> | cpu-fallback: ... | not executed: ...
    skipped: str = ""  # why nothing was built


@dataclass
class IndexResult:
    accelerator: str
    reference: str = ""  # repository:tag@digest of the index
    platforms: list[PlatformResult] = field(default_factory=list)


def index_tag(accelerator: str) -> str:
    return f"{__version__}-{accelerator}"


def server_files(context: Path) -> dict[str, bytes]:
    server = context / "server" / "edgemodel_server"
    return {
        str(p.relative_to(context)): p.read_bytes()
        for p in sorted(server.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def content_tag(
    profile: Profile, arch: str, base: str, dockerfile: bytes, files: Mapping[str, bytes]
) -> str:
    digest = hashlib.sha256()
    for part in (profile.accelerator, profile.execution_provider, arch, base, __version__,
                 *profile.platforms[arch].wheels):  # fmt: skip
        digest.update(part.encode() + b"\0")
    digest.update(dockerfile)
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + data)
    return f"{__version__}-{profile.accelerator}-{arch}-{digest.hexdigest()[:12]}"


def smoke_model(folder: Path) -> Path:
    """A tiny real ONNX model (y = x + 1 on four floats) for the smoke test."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], SMOKE_MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.ones(4, dtype=np.float32), "one")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    path.chmod(0o644)  # read by the server's user in the container
    folder.chmod(0o755)
    return path


class Publisher:
    def __init__(
        self, engine: DockerEngine, registry: Registry, registry_url: str, context: Path,
        wheel_cache: Path, bases: Mapping[str, str], work: Path, mirrored: bool = False,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.registry = registry
        self.repository = f"{registry_url}/{REPOSITORY}"
        self.context = context
        self.wheel_cache = wheel_cache
        self.bases = bases
        self.mirrored = mirrored  # build the profiles whose base and wheels need a mirror
        self.models = work / "smoke-model"
        smoke_model(self.models)

    def log(self, line: str) -> None:
        print(f"servers: {line}", file=sys.stderr, flush=True)

    def platform(self, profile: Profile, arch: str) -> PlatformResult:
        result = PlatformResult(arch=arch, profile=profile.name)
        spec = profile.platforms[arch]
        base = spec.base_image or self.bases.get(arch, DEFAULT_BASE)
        dockerfile = (self.context / "Dockerfile").read_bytes()
        files = server_files(self.context)
        tag = content_tag(profile, arch, base, dockerfile, files)
        existing = self.registry.manifest(self.repository, tag)
        if existing is not None:
            result.reference = f"{self.repository}@{existing.digest}"
            result.size_bytes = existing.size_bytes
            result.smoke_test = "passed when it was built"
            self.log(f"{profile.name}/{arch}: {self.repository}:{tag} is published; nothing to do")
            return result
        found = wheels.download(spec.wheels, arch, self.wheel_cache, self.log)
        with tempfile.TemporaryDirectory(prefix="edgemodel-server-") as tmp:
            ctx = Path(tmp)
            shutil.copyfile(self.context / "Dockerfile", ctx / "Dockerfile")
            for name, data in files.items():
                (ctx / name).parent.mkdir(parents=True, exist_ok=True)
                (ctx / name).write_bytes(data)
            (ctx / "wheels").mkdir()
            for path in found.iterdir():
                try:  # hard links keep a 500 MB CUDA wheel from being copied for every build
                    os.link(path, ctx / "wheels" / path.name)
                except OSError:
                    shutil.copyfile(path, ctx / "wheels" / path.name)
            reference = f"{self.repository}:{tag}"
            self.engine.build(ctx, reference, {
                "BASE_IMAGE": base, "ACCELERATOR": profile.accelerator,
                "EXECUTION_PROVIDER": profile.execution_provider, "SERVER_VERSION": __version__,
            }, self.log, platform=f"linux/{arch}")  # fmt: skip
        served = self.engine.serve_once(
            reference, SMOKE_MODEL, self.log, platform=f"linux/{arch}",
            environment={"EDGEMODEL_MODEL_NAME": SMOKE_MODEL, "EDGEMODEL_CPU_FALLBACK": "true"},
            models_dir=self.models,
        )  # fmt: skip
        result.smoke_test = smoke_result(profile.accelerator, served)
        self.engine.push(self.repository, tag, self.log)
        pushed = self.registry.manifest(self.repository, tag)
        if pushed is None:
            raise ImageError(f"Pushed {reference}, but the registry does not list it")
        result.reference = f"{self.repository}@{pushed.digest}"
        result.size_bytes = pushed.size_bytes
        result.built = True
        return result

    def accelerator(
        self, accelerator: str, profiles: Sequence[Profile], archs: Sequence[str]
    ) -> IndexResult:
        out = IndexResult(accelerator=accelerator)
        for profile in profiles:
            for arch in profile.archs:
                if arch not in archs:
                    continue
                spec = profile.platforms[arch]
                if profile.needs_mirror and not self.mirrored:
                    why = f"needs a mirror of {spec.base_image} and of its wheels (--mirrored)"
                    out.platforms.append(PlatformResult(arch, profile.name, skipped=why))
                    self.log(f"{profile.name}/{arch}: skipped: {why}")
                    continue
                out.platforms.append(self.platform(profile, arch))
        built = [(p.arch, p.reference.split("@", 1)[1]) for p in out.platforms if p.reference]
        if not built:
            return out
        tag = index_tag(accelerator)
        digest = self.registry.put_index(self.repository, tag, built, {
            "org.opencontainers.image.title": f"edgemodel-server ({accelerator})",
            "org.opencontainers.image.version": __version__,
        })  # fmt: skip
        out.reference = f"{self.repository}:{tag}@{digest}"
        self.log(f"Published {out.reference} for {', '.join(a for a, _ in built)}")
        return out


def _bases(raw: str) -> dict[str, str]:
    bases = {}
    for part in filter(None, raw.split(",")):
        arch, sep, image = part.partition("=")
        if not sep or arch not in PLATFORMS:
            raise SystemExit(f"--base takes arch=image pairs (amd64, arm64), got {part!r}")
        bases[arch] = image
    return bases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgemodel_operator.servers",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = Path(os.environ.get("EDGEMODEL_CACHE") or xdg / "edgemodel-operator")
    parser.add_argument("--registry", required=True, help="host[:port][/path] to publish to")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP to the registry")
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST", ""))
    parser.add_argument("--accelerators", default="cpu,gpu,npu")
    parser.add_argument("--platforms", default="amd64,arm64")
    parser.add_argument("--base", default="", help="arch=image,... (default python:3.11-slim)")
    parser.add_argument("--profiles", default=str(root / "images" / "profiles"))
    parser.add_argument("--context", default=str(root / "images"))
    parser.add_argument("--wheels", default=str(cache / "server-wheels"))
    parser.add_argument("--out", default="", help="write the results as JSON here")
    parser.add_argument("--mirrored", action="store_true",
                        help="also build profiles that need a mirror (pip's index settings "
                        "and the profile's baseImage point at it)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.docker_host:
        parser.error("a Docker Engine API is needed: --docker-host or DOCKER_HOST")
    try:
        profiles = load_profiles(Path(args.profiles))
    except ProfileError as err:
        print(f"servers: {err}", file=sys.stderr)
        return 2
    accelerators = [a for a in args.accelerators.split(",") if a]
    archs = [a for a in args.platforms.split(",") if a]
    engine = DockerEngine(args.docker_host)
    registry = Registry(insecure=args.insecure)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="edgemodel-servers-") as work:
        publisher = Publisher(engine, registry, args.registry, Path(args.context),
                              Path(args.wheels), _bases(args.base), Path(work),
                              args.mirrored)  # fmt: skip
        try:
            for accelerator in accelerators:
                mine = [p for p in profiles.values() if p.accelerator == accelerator]
                results.append(publisher.accelerator(accelerator, mine, archs))
        except ImageError as err:
            print(f"servers: {err}", file=sys.stderr)
            return 1
        finally:
            engine.close()
    report = {
        "seconds": round(time.monotonic() - started, 1),
        "indexes": [asdict(r) for r in results],
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(f"{r.accelerator}: {r.reference or 'nothing published'}")
        for p in r.platforms:
            what = p.skipped or f"{p.size_bytes / 1e6:.0f} MB, smoke test {p.smoke_test}"
            print(f"  {p.arch} ({p.profile}): {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
