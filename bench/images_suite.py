"""Suite `images`: per-model images, daemonless against the Docker Engine API builder.

On the image kit's registry and podman's Docker API (hack/imagekit.py), with the published
CPU server index (amd64 + arm64, `make images`):
- build and push time of one model image for both platforms, the registry-native builder
  (append the model layer through the registry API) against the Docker builder
  (images/Dockerfile.model per platform, pushed through the Docker API), side by side in
  alternating order, with repeats; the smoke tests timed apart (they run the images);
- bytes the registry stored for each model image (what an update uploads), from its
  storage folder;
- the published server images' compressed sizes per accelerator and architecture.
Models: the digits test model (20 kB) and PP-OCRv4 text recognition (10.9 MB, a real edge
network, from its wheel)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import ROOT, log

sys.path.insert(0, str(ROOT / "tests" / "models"))

REPEATS = {"tiny": 1, "full": 3}
NAME = "digits"  # the served model's name (the Docker side builds without a cache, as the
# operator does: podman's cache kept an ENV made from another build's argument)


def _storage_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def suite_images(size: str, work: Path) -> dict[str, Any]:
    from edgemodel_operator import __version__
    from edgemodel_operator.adapters.docker_engine import DockerEngine
    from edgemodel_operator.adapters.registry import (
        Registry,
        canonical,
        split_reference,
        tar_layer,
    )
    from edgemodel_operator.adapters.unpacked import UnpackedRunner

    env = {**os.environ, "ACCELERATORS": "cpu", "PLATFORMS": "amd64,arm64",
           "PY": sys.executable}  # fmt: skip
    subprocess.run([str(ROOT / "hack" / "images.sh")], env=env, check=True, stdout=sys.stderr)
    kit = subprocess.run([sys.executable, str(ROOT / "hack" / "imagekit.py"), "env"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    values = dict(line.removeprefix("export ").split("=", 1) for line in kit.splitlines())
    registry_host, docker_host = values["EDGEMODEL_REGISTRY"], values["DOCKER_HOST"]
    storage = Path(os.environ.get("EDGEMODEL_CACHE") or Path.home() / ".cache" /
                   "edgemodel-operator") / "imagekit" / "registry"  # fmt: skip
    registry = Registry(insecure=True)
    server = f"{registry_host}/edgemodel-server:{__version__}-cpu"

    import digits
    import edge_models

    models = {"digits (20 kB)": digits.build().model,
              "PP-OCRv4 rec (10.9 MB)": edge_models.ocr_models()["rec"]}  # fmt: skip
    engine = DockerEngine(docker_host)
    runner = UnpackedRunner(registry, work / "rootfs")
    run_id = uuid.uuid4().hex[:6]
    rows: list[dict[str, Any]] = []

    def daemonless(model: Path, repo: str) -> dict[str, Any]:
        before = _storage_bytes(storage)
        t0 = time.monotonic()
        layer = tar_layer({"models/model.onnx": model.read_bytes()}, 0, "COPY model")
        appended = registry.append_layer(server, repo, layer, {"EDGEMODEL_MODEL_NAME": NAME},
                                         {}, "2026-01-01T00:00:00Z")  # fmt: skip
        registry.put_manifest(repo, "v1", canonical(appended.index), appended.media_type)
        pushed = time.monotonic() - t0
        stored = _storage_bytes(storage) - before
        t1 = time.monotonic()
        fallback = {"EDGEMODEL_CPU_FALLBACK": "true"}
        for image in appended.images:
            runner.serve_once(repo, image.manifest, image.config, image.arch, model, NAME,
                              lambda _: None, environment=fallback)  # fmt: skip
        return {"build_push_s": round(pushed, 3), "smoke_s": round(time.monotonic() - t1, 2),
                "stored_bytes": stored}  # fmt: skip

    def docker(model: Path, repo: str) -> dict[str, Any]:
        before = _storage_bytes(storage)
        index = registry.manifest(*split_reference(server))
        assert index is not None and index.platforms
        t0 = time.monotonic()
        digests = []
        for arch, digest in sorted(index.platforms.items()):
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copyfile(
                    ROOT / "images" / "Dockerfile.model", Path(tmp) / "Dockerfile.model"
                )
                shutil.copyfile(model, Path(tmp) / "model.onnx")
                (Path(tmp) / "model.onnx").chmod(0o644)
                ref = f"{repo}:v1-{arch}"
                base = f"{server.rsplit(':', 1)[0]}@{digest}"
                engine.build(Path(tmp), ref, {"SERVER_IMAGE": base, "MODEL_NAME": NAME},
                             lambda _: None, platform=f"linux/{arch}",
                             dockerfile="Dockerfile.model", cache=False)  # fmt: skip
                engine.push(repo, f"v1-{arch}", lambda _: None)
                manifest = registry.manifest(repo, f"v1-{arch}")
                assert manifest is not None
                digests.append((arch, manifest.digest))
        registry.put_index(repo, "v1", digests)
        pushed = time.monotonic() - t0
        stored = _storage_bytes(storage) - before
        t1 = time.monotonic()
        for arch, _ in digests:
            engine.serve_once(f"{repo}:v1-{arch}", NAME, lambda _: None, platform=f"linux/{arch}",
                              environment={"EDGEMODEL_CPU_FALLBACK": "true"})  # fmt: skip
        return {"build_push_s": round(pushed, 3), "smoke_s": round(time.monotonic() - t1, 2),
                "stored_bytes": stored}  # fmt: skip

    try:
        for label, model in models.items():
            runs: dict[str, list[dict[str, Any]]] = {"daemonless": [], "docker": []}
            for i in range(REPEATS[size]):
                order = ["daemonless", "docker"] if i % 2 == 0 else ["docker", "daemonless"]
                for side in order:
                    repo = f"{registry_host}/bench-{run_id}/{side}-{i}-{model.stem.lower()[:20]}"
                    log(f"images: {label}, {side}, run {i + 1}")
                    runs[side].append((daemonless if side == "daemonless" else docker)(model, repo))
            row: dict[str, Any] = {"model": label, "model_bytes": model.stat().st_size}
            for side, results in runs.items():
                row[side] = {
                    "runs": results,
                    "median_build_push_s": statistics.median(r["build_push_s"] for r in results),
                    "median_smoke_s": statistics.median(r["smoke_s"] for r in results),
                    "median_stored_bytes": statistics.median(r["stored_bytes"] for r in results),
                }
            row["ratio_docker_over_daemonless"] = round(
                row["docker"]["median_build_push_s"] / row["daemonless"]["median_build_push_s"], 1
            )
            rows.append(row)
    finally:
        engine.close()

    sizes = []
    for accelerator in ("cpu", "gpu", "npu"):
        repo, tag = split_reference(f"{registry_host}/edgemodel-server:{__version__}-{accelerator}")
        index = registry.manifest(repo, tag)
        for arch, digest in sorted((index.platforms or {}).items() if index else []):
            manifest = registry.manifest(repo, digest)
            assert manifest is not None
            sizes.append({"accelerator": accelerator, "arch": arch,
                          "compressed_bytes": manifest.size_bytes})  # fmt: skip
    return {
        "goal": "daemonless build and push of a 10 MB model within 2 s",
        "repeats": REPEATS[size],
        "server": server,
        "models": rows,
        "server_image_sizes": sizes,
        "note": "build_push: the model layer and config uploaded (base layers mounted or "
        "skipped), platform manifests and the index stored; smoke: each platform image run "
        "once (arm64 under qemu emulation) and answering one inference",
    }
