"""An OCI distribution (registry HTTP API v2) client: what the image builders need, over
`requests`, with basic or bearer-token auth.

Reads: a manifest or image index by tag or digest, the platforms of an index, blobs.
Writes: blobs (cross-repository mounts first, so layers a registry has are never uploaded
again), manifests and indexes by digest or tag. `append_layer` is the daemonless model
build: the published server index plus one model layer per platform, as a new index."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast
from urllib.parse import urljoin

import requests

from edgemodel_operator.adapters.image_errors import RegistryError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# The layer media type follows the manifest's kind.
LAYER_TYPES = {
    OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip",
    DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj: Any) -> bytes:
    """JSON with sorted keys and no spaces: the same content always gives the same digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


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


def split_reference(reference: str) -> tuple[str, str]:
    """(repository, tag or digest) of repo:tag, repo@sha256:... or repo (latest)."""
    if "@" in reference:
        repo, _, digest = reference.partition("@")
        return repo, digest
    head, _, last = reference.rpartition("/")
    if ":" in last:
        name, _, tag = last.partition(":")
        return f"{head}/{name}" if head else name, tag
    return reference, "latest"


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class Manifest:
    """What the registry holds under a reference. For an index, `digest` is the index's,
    `layers` those of its linux/amd64 (else first) image, `platforms` every image's."""

    digest: str
    media_type: str
    layers: tuple[Layer, ...]
    config_digest: str
    platforms: Mapping[str, str] | None = None  # index: arch -> manifest digest

    @property
    def size_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class NewLayer:
    """A layer to append: its gzip blob, the digest of the uncompressed tar (diff_id)."""

    blob: bytes
    diff_id: str
    created_by: str


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


class Registry:
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

    def close(self) -> None:
        """Release its connection pool."""
        self._session.close()

    # -- transport

    def _basic(self) -> tuple[str, str] | None:
        if self._auth and "username" in self._auth:
            return self._auth["username"], self._auth.get("password", "")
        return None

    def _url(self, repository: str, kind: str, ref: str = "") -> tuple[str, str]:
        host, path = split_repository(repository)
        return f"{self._scheme}://{host}/v2/{path}/{kind}/{ref}", path

    def _call(
        self, method: str, url: str, scope: str, *, push: bool = False, **kwargs: Any
    ) -> requests.Response:
        """One request, authenticating on a 401 challenge (basic, or a bearer token for
        the repository's pull or push scope) and retrying once."""
        headers = dict(kwargs.pop("headers", {}))
        key = f"{scope}:{'push' if push else 'pull'}"
        if key in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[key]}"
        try:
            response = self._session.request(
                method, url, headers=headers, timeout=self._timeout, **kwargs
            )
            if response.status_code == 401:
                scheme, params = _challenge(response.headers.get("WWW-Authenticate", ""))
                if scheme == "bearer" and "realm" in params:
                    self._tokens[key] = self._token(params)
                    headers["Authorization"] = f"Bearer {self._tokens[key]}"
                    response = self._session.request(
                        method, url, headers=headers, timeout=self._timeout, **kwargs
                    )
                elif scheme == "basic" and self._basic():
                    response = self._session.request(
                        method, url, headers=headers, auth=self._basic(),
                        timeout=self._timeout, **kwargs,
                    )  # fmt: skip
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

    @staticmethod
    def _failed(response: requests.Response, what: str) -> RegistryError:
        return RegistryError(
            f"The registry answered HTTP {response.status_code} for {what}: "
            f"{response.text[:300].strip()}"
        )

    # -- reads

    def raw_manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """The manifest's bytes and media type, None when absent."""
        url, path = self._url(repository, "manifests", reference)
        response = self._call("GET", url, path, headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._failed(response, f"the manifest of {repository}:{reference}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media_type = json.loads(response.content).get("mediaType") or media_type
        except ValueError as err:
            raise RegistryError(f"The manifest of {repository}:{reference} is not JSON") from err
        return response.content, media_type

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest of repository:reference (a tag or a digest), None when absent."""
        found = self.raw_manifest(repository, reference)
        if found is None:
            return None
        raw, media_type = found
        body = json.loads(raw)
        digest = sha256_digest(raw)
        if media_type in INDEX_TYPES or "manifests" in body:
            entries = body.get("manifests") or []
            if not entries:
                raise RegistryError(f"The image index {repository}:{reference} is empty")
            platforms = {
                str(e.get("platform", {}).get("architecture")): str(e["digest"])
                for e in entries
                if e.get("platform", {}).get("os") == "linux"
            }
            chosen = platforms.get("amd64") or str(entries[0]["digest"])
            inner = self.manifest(repository, chosen)
            if inner is None:
                raise RegistryError(
                    f"The image index {repository}:{reference} names {chosen}, "
                    "which the registry does not have"
                )
            return Manifest(digest, media_type, inner.layers, inner.config_digest, platforms)
        layers = tuple(
            Layer(str(layer["digest"]), int(layer.get("size", 0)), str(layer.get("mediaType")))
            for layer in body.get("layers", [])
        )
        return Manifest(digest, media_type, layers, str(body.get("config", {}).get("digest")))

    def blob(self, repository: str, digest: str) -> bytes:
        url, path = self._url(repository, "blobs", digest)
        response = self._call("GET", url, path)
        if response.status_code != 200:
            raise self._failed(response, f"blob {digest} of {repository}")
        return bytes(response.content)

    @contextlib.contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[IO[bytes]]:
        """A blob as a stream, for blobs too large to hold (the caller checks its digest)."""
        url, path = self._url(repository, "blobs", digest)
        response = self._call("GET", url, path, stream=True)
        try:
            if response.status_code != 200:
                raise self._failed(response, f"blob {digest} of {repository}")
            response.raw.decode_content = False  # the blob's own bytes, compressed or not
            yield cast(IO[bytes], response.raw)
        finally:
            response.close()

    def has_blob(self, repository: str, digest: str) -> bool:
        url, path = self._url(repository, "blobs", digest)
        return self._call("HEAD", url, path).status_code == 200

    # -- writes

    def _finish_upload(self, location: str, base: str, path: str, data: bytes, digest: str) -> None:
        url = urljoin(base, location)
        url += ("&" if "?" in url else "?") + f"digest={digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        response = self._call("PUT", url, path, push=True, data=data, headers=headers)
        if response.status_code != 201:
            raise self._failed(response, f"the upload of blob {digest}")

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob unless the repository has it; its digest."""
        digest = sha256_digest(data)
        if self.has_blob(repository, digest):
            return digest
        url, path = self._url(repository, "blobs", "uploads/")
        response = self._call("POST", url, path, push=True)
        if response.status_code != 202:
            raise self._failed(response, f"starting a blob upload to {repository}")
        self._finish_upload(response.headers["Location"], url, path, data, digest)
        return digest

    def mount_blob(self, repository: str, source: str, digest: str) -> None:
        """Make `digest` of repository `source` available in `repository`: linked by the
        registry when it can (cross-repository mount), else copied."""
        if self.has_blob(repository, digest):
            return
        url, path = self._url(repository, "blobs", "uploads/")
        _, source_path = split_repository(source)
        response = self._call(
            "POST", url, path, push=True, params={"mount": digest, "from": source_path}
        )
        if response.status_code == 201:
            return
        if response.status_code != 202:
            raise self._failed(response, f"mounting {digest} into {repository}")
        data = self.blob(source, digest)  # the registry opened an upload instead: fill it
        self._finish_upload(response.headers["Location"], url, path, data, digest)

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest or index under a tag or its own digest; its digest."""
        url, path = self._url(repository, "manifests", reference)
        response = self._call(
            "PUT", url, path, push=True, data=body, headers={"Content-Type": media_type}
        )
        if response.status_code != 201:
            raise self._failed(response, f"storing {repository}:{reference}")
        return sha256_digest(body)

    def put_index(
        self, repository: str, tag: str, images: Sequence[tuple[str, str]],
        annotations: Mapping[str, str] | None = None,
    ) -> str:  # fmt: skip
        """An OCI index of images (arch, manifest digest) of the same repository."""
        entries = []
        for arch, digest in images:
            found = self.raw_manifest(repository, digest)
            if found is None:
                raise RegistryError(f"{repository}@{digest} is not in the registry")
            raw, media_type = found
            entries.append({"mediaType": media_type, "digest": digest, "size": len(raw),
                            "platform": {"architecture": arch, "os": "linux"}})  # fmt: skip
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        if annotations:
            index["annotations"] = dict(annotations)
        return self.put_manifest(repository, tag, canonical(index), OCI_INDEX)

    def append_layer(
        self, source: str, repository: str, layer: NewLayer, env: Mapping[str, str],
        labels: Mapping[str, str], created: str,
    ) -> Appended:  # fmt: skip
        """Every platform image of the index `source` (repo:tag or repo@digest), plus
        `layer`, with `env` and `labels` set in its config, stored by digest in
        `repository`. Base layers are mounted, never uploaded again; the layer once for all
        platforms. Deterministic: the same inputs give the same digests. The new index is
        returned, not stored: `put_manifest` tags it once its images are checked."""
        src_repo, src_ref = split_reference(source)
        found = self.raw_manifest(src_repo, src_ref)
        if found is None:
            raise RegistryError(f"The server image {source} is not in the registry")
        raw_index, index_type = found
        index = json.loads(raw_index)
        if index_type not in INDEX_TYPES:
            raise RegistryError(f"{source} is a single image, not a multi-platform index")
        blob = self.put_blob(repository, layer.blob)
        entries, images = [], []
        for entry in index.get("manifests") or []:
            arch = str(entry.get("platform", {}).get("architecture"))
            raw, media_type = self.raw_manifest(src_repo, entry["digest"]) or (b"", "")
            if media_type not in LAYER_TYPES:
                raise RegistryError(f"{source} for {arch} has an unknown manifest {media_type}")
            manifest = json.loads(raw)
            config = json.loads(self.blob(src_repo, manifest["config"]["digest"]))
            for base_layer in manifest["layers"]:
                self.mount_blob(repository, src_repo, base_layer["digest"])
            config["rootfs"]["diff_ids"].append(layer.diff_id)
            config["created"] = created
            config.setdefault("history", []).append(
                {"created": created, "created_by": layer.created_by}
            )
            settings = config.setdefault("config", {})
            kept = [e for e in settings.get("Env") or [] if e.split("=", 1)[0] not in env]
            settings["Env"] = kept + [f"{k}={v}" for k, v in env.items()]
            settings["Labels"] = {**(settings.get("Labels") or {}), **labels}
            config_bytes = canonical(config)
            config_digest = self.put_blob(repository, config_bytes)
            manifest["config"] = {**manifest["config"], "digest": config_digest,
                                  "size": len(config_bytes)}  # fmt: skip
            manifest["layers"].append(
                {"mediaType": LAYER_TYPES[media_type], "digest": blob, "size": len(layer.blob)}
            )
            body = canonical(manifest)
            digest = self.put_manifest(repository, sha256_digest(body), body, media_type)
            entries.append({**entry, "mediaType": media_type, "digest": digest, "size": len(body)})
            images.append(AppendedImage(arch, digest, manifest, config))
        if not entries:
            raise RegistryError(f"{source} names no image")
        index["manifests"] = entries
        return Appended(index_type, index, tuple(images))


@dataclass(frozen=True)
class AppendedImage:
    arch: str
    digest: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]

    @property
    def size_bytes(self) -> int:
        return sum(int(layer.get("size", 0)) for layer in self.manifest["layers"])


@dataclass(frozen=True)
class Appended:
    media_type: str
    index: Mapping[str, Any]  # the new index, to tag with put_manifest(canonical(index))
    images: tuple[AppendedImage, ...]


def tar_layer(files: Mapping[str, bytes], mtime: int, created_by: str) -> NewLayer:
    """A deterministic layer holding `files` (path -> bytes, mode 0644, their folders 0755,
    owned by root, dated `mtime`): the same files always give the same digests."""
    raw = io.BytesIO()
    folders = sorted({p for path in files for p in _parents(path)})
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.mode, info.mtime, info.size = 0o644, mtime, len(files[path])
            tar.addfile(info, io.BytesIO(files[path]))
    plain = raw.getvalue()
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as z:
        z.write(plain)
    return NewLayer(compressed.getvalue(), sha256_digest(plain), created_by)


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
