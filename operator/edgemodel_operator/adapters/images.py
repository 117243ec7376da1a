"""The image builder: per-accelerator model-server images over the Docker Engine API.

`ImageBuilder.ensure` makes sure `repository:tag` exists in the registry, built from the
model, the server and the accelerator's wheels, and smoke-tested before it is pushed:

1. if the registry already has the tag, its digest and size are returned, nothing built;
2. a temporary build context is assembled (Dockerfile, server package, wheels, model) and
   built through the Docker Engine API (Docker, or podman's compatible service), each log
   line streamed to `progress`;
3. the image is run on a free port of 127.0.0.1, must turn ready and answer one real
   inference (a sample, or zeros shaped from the model's metadata), and is removed;
4. it is pushed, and its digest and compressed size are read back from the registry.

The tag is chosen by the caller (content-addressed), so `ensure` is idempotent. Registry
lookups speak the distribution API over `requests`, with basic or bearer-token auth.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import requests
from docker import errors as docker_errors

from edgemodel_operator.adapters.image_errors import (
    BuildFailed,
    PushFailed,
    RegistryError,
    SmokeTestFailed,
    tail,
)

Progress = Callable[[str], None]

ACCELERATORS = ("cpu", "gpu", "npu")
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
SERVER_PORT = "8080/tcp"
# What the server's readiness says while it loads the model; any other reason is final.
LOADING = "the model is loading"
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-]+[a-z0-9]+|/[a-z0-9]+)*$")
_ZERO: dict[str, object] = {"BOOL": False}


@dataclass(frozen=True)
class BuildRequest:
    """One image to make sure of: this model, for this accelerator, as repository:tag."""

    model_file: Path
    model_name: str
    model_version: str
    accelerator: str  # cpu | gpu | npu
    precision: str  # fp32 | fp16 | int8 (recorded in a label)
    repository: str  # e.g. "127.0.0.1:16500/edgemodels/digits"
    tag: str
    base_image: str  # must have python3 with venv (ARG BASE_IMAGE of the Dockerfile)
    context_dir: Path  # holds Dockerfile and server/edgemodel_server/ (the images/ folder)
    # One KServe v2 inference request body ({"inputs": [...]}) for the smoke test; None
    # sends zeros shaped from the model's metadata.
    sample_input: Mapping[str, Any] | None = None
    # The accelerator's wheels (*.whl and requirements.txt); default:
    # context_dir/wheels/<accelerator>/.
    wheels_dir: Path | None = None

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class BuiltImage:
    reference: str  # repository@sha256:...
    digest: str
    size_bytes: int  # compressed: the sum of the layers as stored in the registry
    built: bool  # False when the registry already had the tag


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class Manifest:
    """What the registry holds under a tag. For a multi-platform index, `digest` is the
    index's and `layers` those of its linux/amd64 (else first) image."""

    digest: str
    media_type: str
    layers: tuple[Layer, ...]
    config_digest: str

    @property
    def size_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)


# ---------------------------------------------------------------------------- registry


def split_repository(repository: str) -> tuple[str, str]:
    """("host[:port]", "path") of a repository, with Docker Hub's conventions."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "docker.io", repository
    if host == "docker.io":
        host = "registry-1.docker.io"
        if "/" not in path:
            path = f"library/{path}"
    return host, path


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


class Registry:
    """Read-only access to a registry's manifests (distribution API v2)."""

    def __init__(
        self,
        *,
        insecure: bool = False,
        auth: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._scheme = "http" if insecure else "https"
        self._auth = dict(auth) if auth else None
        self._session = session if session is not None else requests.Session()
        self._timeout = timeout
        self._tokens: dict[str, str] = {}

    def _basic(self) -> tuple[str, str] | None:
        if self._auth and "username" in self._auth:
            return self._auth["username"], self._auth.get("password", "")
        return None

    def _get(self, url: str, accept: str, scope_key: str) -> requests.Response:
        headers = {"Accept": accept}
        token = self._tokens.get(scope_key)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._session.get(url, headers=headers, timeout=self._timeout)
            if response.status_code == 401:
                scheme, params = _challenge(response.headers.get("WWW-Authenticate", ""))
                if scheme == "bearer" and "realm" in params:
                    token = self._token(params)
                    self._tokens[scope_key] = token
                    headers["Authorization"] = f"Bearer {token}"
                    response = self._session.get(url, headers=headers, timeout=self._timeout)
                elif scheme == "basic" and self._basic():
                    response = self._session.get(
                        url, headers=headers, auth=self._basic(), timeout=self._timeout
                    )
        except requests.RequestException as err:
            raise RegistryError(f"Could not reach the registry at {url}: {err}") from err
        return response

    def _token(self, params: Mapping[str, str]) -> str:
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        try:
            response = self._session.get(
                params["realm"], params=query, auth=self._basic(), timeout=self._timeout
            )
        except requests.RequestException as err:
            raise RegistryError(
                f"Could not get a registry token from {params['realm']}: {err}"
            ) from err
        if response.status_code != 200:
            raise RegistryError(
                f"The registry's token service {params['realm']} answered HTTP "
                f"{response.status_code}; check the registry credentials"
            )
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            raise RegistryError(f"The registry's token service {params['realm']} sent no token")
        return token

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest of repository:reference (a tag or a digest), None when absent."""
        host, path = split_repository(repository)
        url = f"{self._scheme}://{host}/v2/{path}/manifests/{reference}"
        response = self._get(url, ACCEPT, path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(
                f"The registry answered HTTP {response.status_code} for the manifest of "
                f"{repository}:{reference}: {response.text[:300].strip()}"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        digest = response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(response.content).hexdigest()
        )
        try:
            body = response.json()
        except ValueError as err:
            raise RegistryError(f"The manifest of {repository}:{reference} is not JSON") from err
        media_type = body.get("mediaType") or media_type
        if media_type in INDEX_TYPES or "manifests" in body:
            entries = body.get("manifests") or []
            if not entries:
                raise RegistryError(f"The image index {repository}:{reference} is empty")
            chosen = next(
                (
                    entry
                    for entry in entries
                    if entry.get("platform", {}).get("os") == "linux"
                    and entry.get("platform", {}).get("architecture") == "amd64"
                ),
                entries[0],
            )
            inner = self.manifest(repository, chosen["digest"])
            if inner is None:
                raise RegistryError(
                    f"The image index {repository}:{reference} names {chosen['digest']}, "
                    "which the registry does not have"
                )
            return Manifest(digest, media_type, inner.layers, inner.config_digest)
        layers = tuple(
            Layer(str(layer["digest"]), int(layer.get("size", 0)), str(layer.get("mediaType")))
            for layer in body.get("layers", [])
        )
        return Manifest(digest, media_type, layers, str(body.get("config", {}).get("digest")))


# ---------------------------------------------------------------------------- builder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _error_of(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _zeros_request(metadata: Mapping[str, Any]) -> dict[str, Any]:
    inputs = []
    for spec in metadata.get("inputs", []):
        shape = [dim if isinstance(dim, int) and dim >= 0 else 1 for dim in spec["shape"]]
        datatype = str(spec["datatype"])
        inputs.append(
            {
                "name": spec["name"],
                "shape": shape,
                "datatype": datatype,
                "data": [_ZERO.get(datatype, 0)] * math.prod(shape),
            }
        )
    return {"id": "smoke-test", "inputs": inputs}


def _copy_server(source: Path, dest: Path) -> None:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


class ImageBuilder:
    """Builds, smoke-tests and pushes model-server images; see the module's docstring."""

    def __init__(
        self,
        docker_host: str,
        registry_insecure: bool = False,
        auth: Mapping[str, str] | None = None,
        *,
        ready_timeout: float = 60.0,
        api_timeout: float = 900.0,
        session: requests.Session | None = None,
    ) -> None:
        self.docker_host = docker_host
        self._auth = dict(auth) if auth else None
        self._ready_timeout = ready_timeout
        self._api_timeout = api_timeout
        self._http = session if session is not None else requests.Session()
        self.registry = Registry(insecure=registry_insecure, auth=auth, session=self._http)
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

    def ensure(self, request: BuildRequest, progress: Progress) -> BuiltImage:
        """Make sure request.reference is in the registry; build, test and push if not."""
        _validate(request)
        existing = self.registry.manifest(request.repository, request.tag)
        if existing is not None:
            progress(
                f"{request.reference} is already in the registry as {existing.digest}; "
                "nothing to build"
            )
            return BuiltImage(
                reference=f"{request.repository}@{existing.digest}",
                digest=existing.digest,
                size_bytes=existing.size_bytes,
                built=False,
            )
        with tempfile.TemporaryDirectory(prefix="edgemodel-build-") as tmp:
            context = Path(tmp)
            self._assemble(request, context)
            self._build(request, context, progress)
        try:
            self._smoke_test(request, progress)
        except SmokeTestFailed:
            with contextlib.suppress(docker_errors.DockerException):
                self.client.images.remove(request.reference)
            raise
        self._push(request, progress)
        pushed = self.registry.manifest(request.repository, request.tag)
        if pushed is None:
            raise RegistryError(
                f"Pushed {request.reference}, but the registry does not list the tag"
            )
        progress(
            f"Pushed {request.repository}@{pushed.digest} "
            f"({pushed.size_bytes / 1e6:.1f} MB compressed, {len(pushed.layers)} layers)"
        )
        return BuiltImage(
            reference=f"{request.repository}@{pushed.digest}",
            digest=pushed.digest,
            size_bytes=pushed.size_bytes,
            built=True,
        )

    # -- steps

    def _assemble(self, request: BuildRequest, context: Path) -> None:
        dockerfile = request.context_dir / "Dockerfile"
        server = request.context_dir / "server" / "edgemodel_server"
        wheels = request.wheels_dir or request.context_dir / "wheels" / request.accelerator
        if not dockerfile.is_file():
            raise BuildFailed(f"No Dockerfile in {request.context_dir}")
        if not (server / "__main__.py").is_file():
            raise BuildFailed(f"No model-server package at {server}")
        wheel_files = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
        if not wheel_files or not (wheels / "requirements.txt").is_file():
            raise BuildFailed(
                f"No {request.accelerator} wheels (*.whl and requirements.txt) in {wheels}; "
                f"download them first (hack/imagekit.py wheels {request.accelerator})"
            )
        shutil.copyfile(dockerfile, context / "Dockerfile")
        _copy_server(server, context / "server" / "edgemodel_server")
        (context / "wheels").mkdir()
        for path in [*wheel_files, wheels / "requirements.txt"]:
            # Hard links keep a 300 MB GPU wheel from being copied for every build.
            try:
                os.link(path, context / "wheels" / path.name)
            except OSError:
                shutil.copyfile(path, context / "wheels" / path.name)
        shutil.copyfile(request.model_file, context / "model.onnx")
        (context / "model.onnx").chmod(0o644)  # the server runs as 65532, not the owner

    def _build(self, request: BuildRequest, context: Path, progress: Progress) -> None:
        progress(
            f"Building {request.reference} ({request.accelerator}, {request.precision}) "
            f"from {request.base_image}"
        )
        started = time.monotonic()
        lines: list[str] = []
        try:
            stream: Iterable[Mapping[str, Any]] = self.client.api.build(
                path=str(context),
                tag=request.reference,
                buildargs={
                    "BASE_IMAGE": request.base_image,
                    "ACCELERATOR": request.accelerator,
                    "PRECISION": request.precision,
                    "MODEL_NAME": request.model_name,
                    "MODEL_VERSION": request.model_version,
                },
                rm=True,
                forcerm=True,
                decode=True,
            )
            for entry in stream:
                if "error" in entry or "errorDetail" in entry:
                    detail = entry.get("error") or entry.get("errorDetail", {}).get("message")
                    raise BuildFailed(
                        f"Building {request.reference} failed: {str(detail).strip()}\n{tail(lines)}"
                    )
                for line in str(entry.get("stream", "")).splitlines():
                    if line.strip():
                        lines.append(line)
                        progress(line)
        except docker_errors.DockerException as err:
            raise BuildFailed(
                f"Building {request.reference} failed: {err}\n{tail(lines)}".rstrip()
            ) from err
        except requests.RequestException as err:
            raise BuildFailed(
                f"Lost the Docker API at {self.docker_host} while building "
                f"{request.reference}: {err}"
            ) from err
        try:
            self.client.images.get(request.reference)
        except docker_errors.ImageNotFound as err:
            raise BuildFailed(
                f"The build of {request.reference} ended without an image:\n{tail(lines)}"
            ) from err
        progress(f"Built {request.reference} in {time.monotonic() - started:.1f}s")

    def _smoke_test(self, request: BuildRequest, progress: Progress) -> None:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        environment = {}
        if request.accelerator != "cpu":
            # The build host rarely has the accelerator: the smoke test checks that the
            # image starts, loads the model and answers; the provider is checked on the node.
            environment["EDGEMODEL_CPU_FALLBACK"] = "true"
        progress(f"Smoke test: running {request.reference} on 127.0.0.1:{port}")
        try:
            container = self.client.containers.run(
                request.reference,
                detach=True,
                name=f"edgemodel-smoke-{uuid.uuid4().hex[:10]}",
                ports={SERVER_PORT: ("127.0.0.1", port)},
                environment=environment,
                labels={"dev.edgeai.smoke-test": request.reference},
            )
        except docker_errors.DockerException as err:
            raise SmokeTestFailed(f"Could not start {request.reference}: {err}") from err
        try:
            started = time.monotonic()
            self._wait_ready(request, container, base)
            progress(f"Smoke test: ready after {time.monotonic() - started:.1f}s")
            summary = self._infer(request, container, base)
            progress(f"Smoke test: passed; {summary}")
        finally:
            with contextlib.suppress(docker_errors.DockerException):
                container.stop(timeout=5)
            with contextlib.suppress(docker_errors.DockerException):
                container.remove(force=True)

    def _logs(self, container: Any) -> list[str]:
        try:
            raw = container.logs(tail=20)
        except docker_errors.DockerException:
            return []
        return [line for line in raw.decode(errors="replace").splitlines() if line.strip()]

    def _wait_ready(self, request: BuildRequest, container: Any, base: str) -> None:
        deadline = time.monotonic() + self._ready_timeout
        last = "no answer"
        while True:
            try:
                container.reload()
            except docker_errors.DockerException as err:
                raise SmokeTestFailed(f"Lost the smoke-test container: {err}") from err
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise SmokeTestFailed(
                    f"{request.reference} exited with code {code} before it became ready",
                    self._logs(container),
                )
            try:
                response = self._http.get(f"{base}/v2/health/ready", timeout=2)
                if response.status_code == 200:
                    return
                reason = _error_of(response)
                if response.status_code == 503 and reason and reason != LOADING:
                    # Not loading any more and not ready: the server gave up on the model.
                    raise SmokeTestFailed(
                        f"{request.reference} did not become ready: {reason}",
                        self._logs(container),
                    )
                last = f"HTTP {response.status_code} {reason or response.text.strip()[:200]}"
            except requests.RequestException as err:
                last = type(err).__name__
            if time.monotonic() > deadline:
                raise SmokeTestFailed(
                    f"{request.reference} was not ready within {self._ready_timeout:.0f}s "
                    f"(last answer of /v2/health/ready: {last})",
                    self._logs(container),
                )
            time.sleep(0.2)

    def _infer(self, request: BuildRequest, container: Any, base: str) -> str:
        model_url = f"{base}/v2/models/{request.model_name}"
        try:
            if request.sample_input is not None:
                body: Mapping[str, Any] = request.sample_input
            else:
                meta = self._http.get(model_url, timeout=10)
                if meta.status_code != 200:
                    raise SmokeTestFailed(
                        f"{request.reference}: GET /v2/models/{request.model_name} answered "
                        f"HTTP {meta.status_code}: {meta.text.strip()[:300]}",
                        self._logs(container),
                    )
                body = _zeros_request(meta.json())
            started = time.monotonic()
            response = self._http.post(f"{model_url}/infer", json=body, timeout=30)
            elapsed = time.monotonic() - started
        except requests.RequestException as err:
            raise SmokeTestFailed(
                f"{request.reference}: the inference request failed: {err}", self._logs(container)
            ) from err
        except ValueError as err:
            raise SmokeTestFailed(
                f"{request.reference}: the model metadata is not JSON: {err}",
                self._logs(container),
            ) from err
        if response.status_code != 200:
            raise SmokeTestFailed(
                f"{request.reference}: the smoke inference answered HTTP "
                f"{response.status_code}: {response.text.strip()[:300]}",
                self._logs(container),
            )
        try:
            outputs = response.json().get("outputs") or []
        except ValueError:
            outputs = []
        if not outputs:
            raise SmokeTestFailed(
                f"{request.reference}: the smoke inference returned no outputs",
                self._logs(container),
            )
        shapes = ", ".join(f"{o.get('name')}{o.get('shape')}" for o in outputs)
        return f"one inference answered in {elapsed * 1000:.0f} ms with {shapes}"

    def _push(self, request: BuildRequest, progress: Progress) -> None:
        progress(f"Pushing {request.reference}")
        seen: set[str] = set()
        try:
            stream: Iterable[Mapping[str, Any]] = self.client.api.push(
                request.repository,
                tag=request.tag,
                stream=True,
                decode=True,
                auth_config=self._auth,
            )
            for entry in stream:
                if "error" in entry or "errorDetail" in entry:
                    detail = entry.get("error") or entry.get("errorDetail", {}).get("message")
                    raise PushFailed(f"Pushing {request.reference} failed: {detail}")
                status = " ".join(
                    str(entry[key]) for key in ("id", "status") if entry.get(key)
                ).strip()
                if status and status not in seen:  # progress bars repeat the status
                    seen.add(status)
                    progress(status)
        except docker_errors.DockerException as err:
            raise PushFailed(f"Pushing {request.reference} failed: {err}") from err
        except requests.RequestException as err:
            raise PushFailed(
                f"Lost the Docker API at {self.docker_host} while pushing "
                f"{request.reference}: {err}"
            ) from err


def _validate(request: BuildRequest) -> None:
    if request.accelerator not in ACCELERATORS:
        raise BuildFailed(f"Unknown accelerator {request.accelerator!r}; expected cpu, gpu or npu")
    if not _TAG.match(request.tag):
        raise BuildFailed(f"{request.tag!r} is not a valid image tag")
    _, path = split_repository(request.repository)
    if not _REPOSITORY.match(path):
        raise BuildFailed(
            f"{request.repository!r} is not a valid repository (lower case, like "
            "registry.example.com/edgemodels/name)"
        )
    if not request.model_file.is_file():
        raise BuildFailed(f"No model file at {request.model_file}")
