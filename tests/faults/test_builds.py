"""Scenarios 6 and 7: image builds. A real build of the digits model (hack/imagekit.py's
podman Docker API and registry, the published CPU server image), the registry and the
Docker API each behind a fault proxy: an EdgeModel deleted mid-build; the work directory
full, the Docker API gone and the registry refusing the manifest mid-build."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clusterkit import STATE, publish_servers, wait_until
from faultproxy import FaultProxy, Rule, tcp_upstream, unix_upstream
from kit import (
    DEADLINE,
    ROOT,
    TEST_LABEL,
    Operator,
    Site,
    applied_spec_kept,
    condition,
    duplicates,
    promoted,
    serves,
)

for _path in (ROOT / "tests" / "models", ROOT / "tests" / "imagekit"):
    sys.path.insert(0, str(_path))
import digits  # noqa: E402
from imagekit_support import kit  # noqa: E402

from edgemodel_operator.adapters.registry import Registry  # noqa: E402

OWN = "registry.local/detector:1.0"  # what serves before the build: an image of its own
MANIFEST_PUT = r"^/v2/.+/manifests/"


@dataclass(frozen=True)
class Builds:
    docker_socket: str  # podman's Docker API
    registry: str  # host:port
    servers: str  # EDGEMODEL_SERVER_IMAGE: the published server indexes
    model_uri: str
    sha256: str


@pytest.fixture(scope="module")
def builds() -> Iterator[Builds]:
    # The cluster's kit (started with its real nodes) is the cluster's to stop, not ours.
    owned_by_cluster = (STATE / "started-imagekit").exists()
    started_here = kit("status", check=False).returncode != 0 and not owned_by_cluster
    kit("up")
    exports = [line.removeprefix("export ") for line in kit("env").stdout.splitlines()]
    env = dict(line.split("=", 1) for line in exports if "=" in line)
    # The platforms the rest of the session publishes: the same tag must keep naming the
    # same multi-arch index (an amd64-only one would replace it for every later test).
    servers = publish_servers("cpu", os.environ.get("E2E_PLATFORMS", "amd64,arm64"))
    model = digits.build()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(model.dir))
    store = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    yield Builds(
        docker_socket=env["DOCKER_HOST"].removeprefix("unix://"),
        registry=env["EDGEMODEL_REGISTRY"],
        servers=servers,
        model_uri=f"http://127.0.0.1:{store.server_address[1]}/model.onnx",
        sha256=hashlib.sha256(model.model.read_bytes()).hexdigest(),
    )
    store.shutdown()
    if started_here:
        kit("down", check=False)


@pytest.fixture
def registry(builds: Builds) -> Iterator[FaultProxy]:
    """The registry, behind a fault proxy: the operator pushes through it."""
    host, port = builds.registry.split(":")
    proxy = FaultProxy(tcp_upstream(host, int(port)), "registry-proxy").start()
    yield proxy
    proxy.stop()


def builder(start: Any, builds: Builds, registry: FaultProxy | str, work: Path, **env: str
            ) -> Operator:  # fmt: skip
    """An operator that builds, pushing through `registry` (a proxy, or host:port)."""
    host = registry if isinstance(registry, str) else registry.url.removeprefix("http://")
    return start(
        EDGEMODEL_REGISTRY_URL=f"{host}/faults",
        EDGEMODEL_REGISTRY_INSECURE="true",
        EDGEMODEL_SERVER_IMAGE=builds.servers,
        EDGEMODEL_WORK_DIR=str(work),
        EDGEMODEL_BUILD_CONTEXT=str(ROOT / "images"),
        **env,
    )


def model(site: Site, builds: Builds, name: str, image: str | None, version: str
          ) -> dict[str, Any]:  # fmt: skip
    """The digits model on one CPU replica: its own image, or (image None) one built."""
    target = {"name": "cpu", "accelerator": "cpu", "precision": "fp32", "replicas": 1}
    return {
        "apiVersion": "edgeai.dev/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name, "labels": {TEST_LABEL: site.selector}},
        "spec": {
            "model": {"uri": builds.model_uri, "sha256": builds.sha256, "version": version},
            "targets": [{**target, "image": image} if image else target],
            "serving": {"probe": {"periodSeconds": 2, "failureThreshold": 2}},
            "rollout": {"progressDeadlineSeconds": DEADLINE},
        },
    }


def built_image(em: dict[str, Any]) -> str:
    return str(((em.get("status") or {}).get("images") or [{}])[0].get("image", ""))


def image_of(site: Site, name: str) -> set[str]:
    return {w.spec.template.spec.containers[0].image for w in site.workloads(name).values()}


def logged(op: Operator, text: str) -> list[dict[str, Any]]:
    return [e for e in op.logs() if text in str(e.get("event", ""))]


# --- scenario 6 -----------------------------------------------------------------------


@pytest.mark.scenario(
    "6",
    "an EdgeModel deleted during its image build",
    "the build stops (the operator logs that it stopped it), no manifest is pushed after "
    "the deletion, the object is gone within 5 s (no finalizer holds it); a model "
    "built next is not held up by the stopped build",
)
def test_deleted_during_its_build(site: Site, start: Any, builds: Builds, registry: FaultProxy,
                                  tmp_path: Path) -> None:  # fmt: skip
    op = builder(start, builds, registry, tmp_path / "work")
    # The build is held at its first upload to the registry: the deletion lands mid-build.
    held = registry.add(Rule("POST", r"/blobs/uploads/", hold=True, times=1))
    site.apply(model(site, builds, "doomed", None, "1.0.0"))
    assert held.hit.wait(120), "the build never reached the registry"
    deleted_at = time.time()
    site.cluster.kubectl("delete", "edgemodel", "doomed", "-n", site.namespace, "--wait=false")
    wait_until(lambda: "doomed" not in names(site), timeout=5, what="doomed to be gone")
    registry.release()
    stopped = wait_until(lambda: logged(op, "Stopped the build"), timeout=30,
                         what="the operator to stop the build")  # fmt: skip
    assert "doomed" in str(stopped[0]), stopped
    time.sleep(5)  # what a build that went on would push next
    late = [e for e in registry.requests("PUT", MANIFEST_PUT) if e.at > deleted_at]
    tagged = [e for e in late if "/manifests/sha256:" not in e.target]
    assert not tagged, f"tagged after the deletion: {tagged}"
    if late:  # manifests by digest only: harmless (no tag names them), and it says so
        assert "manifests by digest" in stopped[0]["event"], stopped
    # The builder is free again: the next model's build starts at once and completes.
    site.apply(model(site, builds, "next", None, "1.0.0"))
    done = site.wait("next", lambda e: promoted(e) and bool(built_image(e)), 240, "next built")
    assert image_of(site, "next") == {built_image(done)}


def names(site: Site) -> set[str]:
    items = site.cluster.custom.list_namespaced_custom_object(
        "edgeai.dev", "v1alpha1", site.namespace, "edgemodels")["items"]  # fmt: skip
    return {i["metadata"]["name"] for i in items}


# --- scenario 7 -----------------------------------------------------------------------


def serving_then_build(site: Site, builds: Builds) -> tuple[dict[str, Any], str]:
    """v1 serves its own image; v2 asks for a built one. Returns v2 and v1's revision."""
    site.apply(model(site, builds, "digits", OWN, "1.0.0"))
    v1 = site.wait("digits", lambda e: promoted(e) and serves(site, "digits",
                   e["status"]["revision"], OWN), 60, "v1 serving")  # fmt: skip
    v2 = model(site, builds, "digits", None, "2.0.0")
    site.apply(v2)
    return v2, v1["status"]["revision"]


def failed_and_kept(site: Site, v2: dict[str, Any], v1_revision: str, cause: str,
                    timeout: float) -> dict[str, Any]:  # fmt: skip
    """What a user sees while the build fails: ImagesReady False naming the cause, the old
    revision still serving its own image, the spec as applied."""
    em = site.wait("digits", lambda e: condition(e, "ImagesReady").get("reason")
                   == "BuildFailed", timeout, "the build to fail")  # fmt: skip
    message = condition(em, "ImagesReady")["message"]
    assert cause in message and "retrying in" in message, message
    assert em["status"]["phase"] == "Building"
    assert condition(em, "Ready")["status"] == "True", em["status"]
    assert serves(site, "digits", v1_revision, OWN), image_of(site, "digits")
    assert applied_spec_kept(site, v2)
    return em


def recovered(site: Site, op: Operator, v2: dict[str, Any], builds: Builds) -> None:
    """Once the fault is gone: built on retry, rolled out, pinned by a digest the registry
    holds, no duplicate Events, the same operator process."""
    em = site.wait("digits", lambda e: promoted(e) and bool(built_image(e))
                   and serves(site, "digits", e["status"]["revision"], built_image(e)),
                   180, "built on retry and rolled out")  # fmt: skip
    repo, _, digest = built_image(em).partition("@")
    real = repo.replace(repo.split("/")[0], builds.registry, 1)
    assert Registry(insecure=True).manifest(real, digest) is not None, built_image(em)
    assert not duplicates(site.events("digits")), site.timeline("digits")
    assert applied_spec_kept(site, v2)
    assert op.alive() and op.process.proc is not None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: the work directory of a build that needs far more."""
    work = tmp_path / "small"
    work.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(work)], check=True)
    yield work
    with contextlib.suppress(subprocess.CalledProcessError):
        subprocess.run(["umount", "-l", str(work)], check=True)


@pytest.mark.scenario(
    "7a",
    "the build's work directory full (a 4 MiB tmpfs)",
    "ImagesReady False naming the full disk, the step and the retry, nothing of the failed "
    "step left on the disk, v1 keeps serving its image, spec untouched; the tmpfs grown: "
    "built on retry and rolled out, no duplicate Events, no restart",
)
def test_disk_full(site: Site, start: Any, builds: Builds, registry: FaultProxy,
                   small_disk: Path) -> None:  # fmt: skip
    op = builder(start, builds, registry, small_disk)
    v2, v1_revision = serving_then_build(site, builds)
    failed = failed_and_kept(site, v2, v1_revision, "No space left on device", 180)
    message = condition(failed, "ImagesReady")["message"]
    assert "at 'Smoke test: unpacking" in message and str(small_disk) in message, message
    # What the failed step had written is gone: the disk is not left full until the retry.
    assert shutil.disk_usage(small_disk).used < 1 << 20, shutil.disk_usage(small_disk)
    subprocess.run(["mount", "-o", "remount,size=1g", str(small_disk)], check=True)
    recovered(site, op, v2, builds)


@pytest.mark.scenario(
    "7b",
    "the Docker API gone mid-build (builder docker)",
    "ImagesReady False naming the lost Docker API, v1 keeps serving its image, spec untouched; "
    "the API back: built on retry and rolled out, no duplicate Events, no restart",
)
def test_docker_api_gone(site: Site, start: Any, builds: Builds, tmp_path: Path) -> None:
    docker = FaultProxy(unix_upstream(builds.docker_socket), "docker-proxy").start()
    try:  # podman pushes to the registry itself (the proxy is not a registry it trusts)
        op = builder(start, builds, builds.registry, tmp_path / "work", EDGEMODEL_BUILDER="docker",
                     DOCKER_HOST=f"tcp://127.0.0.1:{docker.port}")  # fmt: skip
        v2, v1_revision = serving_then_build(site, builds)
        wait_until(lambda: docker.requests("POST", r"/build\?"), timeout=120,
                   what="the build to start")  # fmt: skip
        docker.refuse()
        failed_and_kept(site, v2, v1_revision, "Docker API", 120)
        docker.restore()
        recovered(site, op, v2, builds)
    finally:
        docker.stop()


@pytest.mark.scenario(
    "7c",
    "the registry answering 500 to the manifest upload",
    "ImagesReady False naming the registry's answer, v1 keeps serving its image (no workload "
    "points at an image never pushed), spec untouched; the registry healed: built on retry "
    "and rolled out, no duplicate Events, no restart",
)
def test_registry_refuses_the_manifest(site: Site, start: Any, builds: Builds,
                                       registry: FaultProxy, tmp_path: Path) -> None:  # fmt: skip
    op = builder(start, builds, registry, tmp_path / "work")
    refused = registry.add(Rule("PUT", MANIFEST_PUT, status=500))
    v2, v1_revision = serving_then_build(site, builds)
    failed_and_kept(site, v2, v1_revision, "500", 180)
    assert refused.hits >= 1
    registry.clear()
    recovered(site, op, v2, builds)
