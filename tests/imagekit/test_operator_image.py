"""The operator image (the top-level Dockerfile) built through the Docker API, air-gapped.

The build context is assembled like a site would: Dockerfile, .dockerignore, the package,
images/ (without wheels) and wheels/ with the operator's own wheels (`hack/imagekit.py
wheels operator`, cached); BASE_IMAGE is the kit's local Debian base, so nothing is pulled
or downloaded. The image must run as 65532, stop with exit code 2 on a bad setting, import
its optimize dependencies and carry the model server's build context. Its size is printed
at the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from imagekit_support import IMAGES, ROOT, Kit, kit, record, report

# What the image runs with in the chart: a read-only root filesystem and a scratch /tmp.
LIKE_THE_CHART: dict[str, Any] = {"read_only": True, "tmpfs": {"/tmp": "rw,size=64m"}}

CHECK_INSIDE = """
import importlib.util, json, os, sys
import edgemodel_operator.__main__, edgemodel_operator.optimize, kubernetes.client, onnxruntime
images = os.environ["EDGEMODEL_BUILD_CONTEXT"]
print(json.dumps({
    "uid": os.getuid(),
    "gid": os.getgid(),
    "python": sys.version_info[:2],
    "onnxruntime": onnxruntime.__version__,
    "providers": onnxruntime.get_available_providers(),
    "images": images,
    "dockerfile": os.path.isfile(os.path.join(images, "Dockerfile")),
    "server": os.path.isfile(os.path.join(images, "server/edgemodel_server/__main__.py")),
    "wheels_in_opt": [
        os.path.join(d, f) for d, _, fs in os.walk("/opt") for f in fs if f.endswith(".whl")
    ],
    "pip": importlib.util.find_spec("pip") is not None,
    "setuptools": importlib.util.find_spec("setuptools") is not None,
    "src": os.path.exists("/src"),
}))
"""


@dataclass(frozen=True)
class OperatorImage:
    tag: str
    attrs: dict[str, Any]
    client: docker.DockerClient


def assemble_context(target: Path, wheels: Path) -> Path:
    """A build context as a site would send it, with the wheels for an air-gapped build."""
    target.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "operator", target / "operator", ignore=junk)
    shutil.copytree(
        IMAGES, target / "images", ignore=shutil.ignore_patterns("wheels", "__pycache__", "*.pyc")
    )
    (target / "wheels").mkdir()
    for wheel in wheels.glob("*.whl"):
        try:
            os.link(wheel, target / "wheels" / wheel.name)
        except OSError:
            shutil.copyfile(wheel, target / "wheels" / wheel.name)
    return target


def run(image: OperatorImage, **options: Any) -> tuple[int, str]:
    """Run a container of the image to its end; its exit code and its output."""
    container = image.client.containers.create(image.tag, **LIKE_THE_CHART, **options)
    try:
        container.start()
        status = container.wait(timeout=120)
        return int(status["StatusCode"]), container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def operator_wheels(imagekit: Kit) -> Path:
    kit("wheels", "operator")
    kit("base")
    cache = (
        os.environ.get("EDGEMODEL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgemodel-operator"
    )
    wheels = Path(cache) / "wheels" / "operator"
    assert any(wheels.glob("kopf-*.whl")) and any(wheels.glob("onnxruntime-*.whl")), wheels
    return wheels


@pytest.fixture(scope="module")
def operator_image(
    imagekit: Kit, operator_wheels: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorImage]:
    context = assemble_context(tmp_path_factory.mktemp("operator") / "context", operator_wheels)
    tag = f"localhost/edgemodel-operator-test:{imagekit.run_id}"
    client = docker.DockerClient(base_url=imagekit.docker_host, timeout=600)
    lines: list[str] = []
    started = time.monotonic()
    try:
        stream = client.api.build(
            path=str(context),
            tag=tag,
            buildargs={
                "BASE_IMAGE": "localhost/edgemodel-base:bookworm",
                # Nothing answers there: the build passes only if it takes the wheels.
                "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                "REVISION": "test",
            },
            rm=True,
            forcerm=True,
            decode=True,
        )
        for entry in stream:
            if "error" in entry or "errorDetail" in entry:
                detail = entry.get("error") or entry.get("errorDetail", {}).get("message")
                tail = "\n".join(lines[-30:])
                pytest.fail(f"building the operator image failed: {detail}\n{tail}", False)
            lines.extend(line for line in str(entry.get("stream", "")).splitlines() if line)
        record("build the operator image (wheels/, local base)", time.monotonic() - started)
        attrs = client.images.get(tag).attrs
        yield OperatorImage(tag=tag, attrs=attrs, client=client)
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(tag, force=True)
        client.close()


def test_image_is_non_root_labeled_and_configured(
    operator_image: OperatorImage, imagekit: Kit
) -> None:
    config = operator_image.attrs["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "-m", "edgemodel_operator"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["EDGEMODEL_BUILD_CONTEXT"] == "/opt/edgemodel/images"
    assert env["EDGEMODEL_WORK_DIR"] == "/tmp/edgemodel"
    assert env["EDGEMODEL_HEALTH_ADDRESS"] == "0.0.0.0:8081"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "edgemodel-operator"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.revision"] == "test"
    assert labels["org.opencontainers.image.base.name"] == "localhost/edgemodel-base:bookworm"
    size = operator_image.attrs["Size"]
    base = operator_image.client.images.get("localhost/edgemodel-base:bookworm").attrs["Size"]
    report(
        f"operator image: {size / 1e6:.1f} MB uncompressed "
        f"(base {base / 1e6:.1f} MB + {(size - base) / 1e6:.1f} MB: venv with the optimize "
        f"extra, model-server build context)"
    )


def test_bad_setting_stops_it_with_exit_code_2_naming_the_variable(
    operator_image: OperatorImage,
) -> None:
    code, output = run(operator_image, environment={"EDGEMODEL_RESYNC_SECONDS": "0"})
    assert code == 2, output
    assert "invalid configuration" in output and "EDGEMODEL_RESYNC_SECONDS" in output, output


def test_it_imports_its_optimize_dependencies_and_carries_the_build_context(
    operator_image: OperatorImage,
) -> None:
    code, output = run(operator_image, entrypoint=["python", "-c", CHECK_INSIDE])
    assert code == 0, output
    inside = json.loads(output.strip().splitlines()[-1])
    assert (inside["uid"], inside["gid"]) == (65532, 65532)
    assert inside["python"] == [3, 11]
    assert "CPUExecutionProvider" in inside["providers"]
    assert inside["images"] == "/opt/edgemodel/images"
    assert inside["dockerfile"] and inside["server"], inside
    # The wheels built the venv and stayed in the build stage; pip is gone from the venv.
    assert inside["wheels_in_opt"] == [], inside
    assert not inside["src"] and not inside["pip"] and not inside["setuptools"], inside
