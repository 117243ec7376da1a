"""The Docker Engine API (Docker's, or podman's compatible service), for sites that have
one: build an image from a context (for a platform, under emulation when the host has
binfmt), push it, and run it once to check that it serves.

The check runs the image on a free port of 127.0.0.1 with the model mounted or built in,
waits until it is ready, sends one real inference through the Open Inference Protocol
client and reads which execution provider answered."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import docker
import requests
import urllib3
from docker import errors as docker_errors

from edgemodel_operator.adapters import oip
from edgemodel_operator.adapters.image_errors import (
    BuildFailed,
    PushFailed,
    SmokeTestFailed,
    tail,
)

Progress = Callable[[str], None]
SERVER_PORT = "8080/tcp"
# The API gone: refused or reset before an answer (requests), or mid-stream, while a build's
# or a push's output is read (urllib3's own errors, which requests does not wrap there).
LOST = (requests.RequestException, urllib3.exceptions.HTTPError)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DockerEngine:
    def __init__(
        self, docker_host: str, auth: Mapping[str, str] | None = None, api_timeout: float = 1800
    ) -> None:
        self.docker_host = docker_host
        self._auth = dict(auth) if auth else None
        self._api_timeout = api_timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The Docker API client (docker.DockerClient), connected on first use."""
        if self._client is None:
            try:
                self._client = docker.DockerClient(
                    base_url=self.docker_host, timeout=self._api_timeout
                )
            except docker_errors.DockerException as err:
                raise BuildFailed(
                    f"Could not reach the Docker API at {self.docker_host}: {err}"
                ) from err
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def build(
        self, context: Path, tag: str, buildargs: Mapping[str, str], progress: Progress,
        platform: str | None = None, dockerfile: str = "Dockerfile", cache: bool = True,
    ) -> None:  # fmt: skip
        """Build `context` as `tag`, each log line streamed to `progress`; `cache=False`
        builds every step again."""
        started = time.monotonic()
        lines: list[str] = []
        try:
            stream: Iterable[Mapping[str, Any]] = self.client.api.build(
                path=str(context), tag=tag, buildargs=dict(buildargs), dockerfile=dockerfile,
                platform=platform, rm=True, forcerm=True, decode=True, nocache=not cache,
            )  # fmt: skip
            for entry in stream:
                if "error" in entry or "errorDetail" in entry:
                    detail = entry.get("error") or entry.get("errorDetail", {}).get("message")
                    raise BuildFailed(
                        f"Building {tag} failed: {str(detail).strip()}\n{tail(lines)}"
                    )
                for line in str(entry.get("stream", "")).splitlines():
                    if line.strip():
                        lines.append(line)
                        progress(line)
        except docker_errors.DockerException as err:
            raise BuildFailed(f"Building {tag} failed: {err}\n{tail(lines)}".rstrip()) from err
        except LOST as err:
            raise BuildFailed(
                f"Lost the Docker API at {self.docker_host} while building {tag}: {err}"
            ) from err
        try:
            self.client.images.get(tag)
        except docker_errors.ImageNotFound as err:
            raise BuildFailed(f"The build of {tag} ended without an image:\n{tail(lines)}") from err
        except LOST as err:
            raise BuildFailed(
                f"Lost the Docker API at {self.docker_host} after building {tag}: {err}"
            ) from err
        progress(f"Built {tag} in {time.monotonic() - started:.1f}s")

    def push(self, repository: str, tag: str, progress: Progress) -> None:
        reference = f"{repository}:{tag}"
        progress(f"Pushing {reference}")
        seen: set[str] = set()
        try:
            stream: Iterable[Mapping[str, Any]] = self.client.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=self._auth
            )
            for entry in stream:
                if "error" in entry or "errorDetail" in entry:
                    detail = entry.get("error") or entry.get("errorDetail", {}).get("message")
                    raise PushFailed(f"Pushing {reference} failed: {detail}")
                status = " ".join(str(entry[k]) for k in ("id", "status") if entry.get(k)).strip()
                if status and status not in seen:  # progress bars repeat the status
                    seen.add(status)
                    progress(status)
        except docker_errors.DockerException as err:
            raise PushFailed(f"Pushing {reference} failed: {err}") from err
        except LOST as err:
            raise PushFailed(
                f"Lost the Docker API at {self.docker_host} while pushing {reference}: {err}"
            ) from err

    def remove(self, reference: str) -> None:
        with contextlib.suppress(docker_errors.DockerException):
            self.client.images.remove(reference, force=True)

    def serve_once(
        self, reference: str, model: str, progress: Progress, *,
        platform: str | None = None, environment: Mapping[str, str] | None = None,
        models_dir: Path | None = None, request: Mapping[str, Any] | None = None,
        ready_timeout: float = 180.0,
    ) -> oip.Served:  # fmt: skip
        """Run the image, wait until it is ready, send one inference; SmokeTestFailed with
        the container's last log lines when it does not serve. `models_dir` is mounted
        read-only at /models (for a server image that carries no model)."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        progress(f"Smoke test: running {reference} ({platform or 'native'}) on 127.0.0.1:{port}")
        volumes = {str(models_dir): {"bind": "/models", "mode": "ro"}} if models_dir else None
        try:
            container = self.client.containers.run(
                reference, detach=True, name=f"edgemodel-smoke-{uuid.uuid4().hex[:10]}",
                ports={SERVER_PORT: ("127.0.0.1", port)}, environment=dict(environment or {}),
                volumes=volumes, platform=platform,
                labels={"dev.edgeai.smoke-test": reference},
            )  # fmt: skip
        except docker_errors.DockerException as err:
            raise SmokeTestFailed(f"Could not start {reference}: {err}") from err
        try:
            started = time.monotonic()
            failed = oip.wait_ready(base, ready_timeout, alive=lambda: _running(container))
            if failed:
                raise SmokeTestFailed(
                    f"{reference} did not become ready: {failed}", _logs(container)
                )
            progress(f"Smoke test: ready after {time.monotonic() - started:.1f}s")
            failed = oip.check(base, model, timeout=60, request=request)
            if failed:
                raise SmokeTestFailed(f"{reference}: {failed}", _logs(container))
            served = oip.served_from(oip.metadata(base, model))
        except requests.RequestException as err:
            raise SmokeTestFailed(f"{reference}: {err}", _logs(container)) from err
        finally:
            with contextlib.suppress(docker_errors.DockerException):
                container.remove(force=True)
        progress(f"Smoke test: passed; {served.summary}")
        return served


def _running(container: Any) -> bool:
    try:
        container.reload()
    except docker_errors.DockerException:
        return False
    return container.status not in ("exited", "dead")


def _logs(container: Any) -> list[str]:
    try:
        raw = container.logs(tail=20)
    except docker_errors.DockerException:
        return []
    return [line for line in raw.decode(errors="replace").splitlines() if line.strip()]
