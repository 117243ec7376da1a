"""CycloneDX 1.6 SBOMs of model-server images, read from the image itself through the
registry's API: the Python distributions of every site-packages (their *.dist-info), the
Debian packages (dpkg's status), the OS (os-release) and the model file with its sha256.
Nothing is run, so an arm64 image is listed as readily as an amd64 one.

Each layer is streamed once (its digest checked) and what it holds is cached by its digest,
so the server's layers, shared by every model image, are read once per builder. The SBOM is
deterministic: the same image always gives the same bytes (no timestamp; the serial number
derives from the digest), which keeps re-attesting an image idempotent."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import tarfile
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from edgemodel_operator import __version__
from edgemodel_operator.adapters.image_errors import RegistryError
from edgemodel_operator.adapters.registry import Registry

SPEC_VERSION = "1.6"
SCHEMA = f"http://cyclonedx.org/schema/bom-{SPEC_VERSION}.schema.json"
PREDICATE_TYPE = "https://cyclonedx.org/bom"  # cosign's --type cyclonedx
PLATFORM = "edgeai.dev:platform"
# The files an SBOM is made of; everything else in a layer is only streamed past.
LISTED = re.compile(
    r"(?:^|/)(?:site|dist)-packages/[^/]+\.dist-info/METADATA$"
    r"|^var/lib/dpkg/status$|^var/lib/dpkg/status\.d/[^/]+$"
    r"|^(?:etc|usr/lib)/os-release$"
)
MODELS = re.compile(r"^models/[^/]+\.onnx$")  # hashed, not kept
CHUNK = 1024 * 1024


@dataclass
class LayerScan:
    """What one layer holds of interest: texts, model hashes and what it deletes below."""

    files: dict[str, str] = field(default_factory=dict)
    models: dict[str, list[Any]] = field(default_factory=dict)  # path -> [sha256, size]
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)


class _Hashing:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw, self.sha = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def scan_layer(stream: IO[bytes]) -> LayerScan:
    """Read a layer tar (gzip, bzip2, xz or plain) once, front to back."""
    scan = LayerScan()
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            name = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
            folder, base = posixpath.split(name)
            if base == ".wh..wh..opq":
                scan.opaque.append(folder)
            elif base.startswith(".wh."):
                scan.whiteouts.append(posixpath.join(folder, base[4:]))
            elif member.isfile() and (LISTED.search(name) or MODELS.match(name)):
                data = tar.extractfile(member)
                assert data is not None  # a regular file always has data
                if MODELS.match(name):
                    sha = hashlib.sha256()
                    while chunk := data.read(CHUNK):
                        sha.update(chunk)
                    scan.models[name] = [sha.hexdigest(), member.size]
                else:
                    scan.files[name] = data.read().decode("utf-8", "replace")
    return scan


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/") or folder in ("", ".")


def merge(scans: Iterable[LayerScan]) -> tuple[dict[str, str], dict[str, list[Any]]]:
    """The files of the image the layers make, lowest first, whiteouts applied."""
    files: dict[str, str] = {}
    models: dict[str, list[Any]] = {}
    for scan in scans:
        for held in (files, models):
            for path in list(held):
                if any(_under(path, f) for f in (*scan.opaque, *scan.whiteouts)):
                    del held[path]
        files.update(scan.files)
        models.update(scan.models)
    return files, models


def _os_release(files: Mapping[str, str]) -> dict[str, str]:
    text = files.get("etc/os-release") or files.get("usr/lib/os-release") or ""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip().strip("\"'") for k, v in pairs}


def _purl_part(value: str) -> str:
    return quote(value, safe=".-_~")


def _python_components(files: Mapping[str, str]) -> list[dict[str, Any]]:
    found = []
    for path, text in sorted(files.items()):
        if not path.endswith(".dist-info/METADATA"):
            continue
        meta = HeaderParser().parsestr(text)
        name, version = meta.get("Name"), meta.get("Version")
        if not name or not version:
            continue
        purl_name = re.sub(r"[-_.]+", "-", name).lower()
        purl = f"pkg:pypi/{_purl_part(purl_name)}@{_purl_part(version)}"
        component: dict[str, Any] = {
            "type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl,
            "properties": [{"name": "edgeai.dev:path",
                            "value": "/" + path.rsplit("/", 2)[0]}],
        }  # fmt: skip
        if expression := meta.get("License-Expression"):
            component["licenses"] = [{"expression": expression.strip()}]
        found.append(component)
    return found


def _deb_components(
    files: Mapping[str, str], os_release: Mapping[str, str]
) -> list[dict[str, Any]]:
    texts = [t for p, t in sorted(files.items()) if p.startswith("var/lib/dpkg/status")]
    distro_id = os_release.get("ID", "debian")
    distro = f"{distro_id}-{os_release['VERSION_ID']}" if "VERSION_ID" in os_release else ""
    found = []
    for text in texts:
        for paragraph in re.split(r"\n\s*\n", text):
            fields = dict(
                line.split(":", 1) for line in paragraph.splitlines()
                if ":" in line and not line.startswith((" ", "\t"))
            )  # fmt: skip
            fields = {k.strip(): v.strip() for k, v in fields.items()}
            status = fields.get("Status", "install ok installed")
            if "Package" not in fields or "Version" not in fields:
                continue
            if not status.endswith(" installed"):
                continue
            name, version = fields["Package"], fields["Version"]
            query = f"?arch={fields.get('Architecture', 'all')}"
            if distro:
                query += f"&distro={distro}"
            purl = f"pkg:deb/{distro_id}/{_purl_part(name)}@{_purl_part(version)}{query}"
            found.append({"type": "library", "bom-ref": purl, "name": name,
                          "version": version, "purl": purl})  # fmt: skip
    return found


def _model_components(
    models: Mapping[str, Sequence[Any]], labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    found = []
    for path, (sha, size) in sorted(models.items()):
        name = labels.get("dev.edgeai.model") or posixpath.splitext(posixpath.basename(path))[0]
        props = [{"name": "edgeai.dev:path", "value": "/" + path},
                 {"name": "edgeai.dev:bytes", "value": str(size)}]  # fmt: skip
        if precision := labels.get("dev.edgeai.precision"):
            props.append({"name": "edgeai.dev:precision", "value": precision})
        component: dict[str, Any] = {
            "type": "machine-learning-model", "bom-ref": f"model:/{path}@sha256:{sha}",
            "name": name, "hashes": [{"alg": "SHA-256", "content": sha}], "properties": props,
        }  # fmt: skip
        if version := labels.get("org.opencontainers.image.version"):
            component["version"] = version
        found.append(component)
    return found


def _oci_purl(repository: str, digest: str, arch: str | None = None) -> str:
    name = repository.rsplit("/", 1)[-1].lower()
    query = f"?repository_url={_purl_part(repository)}"
    if arch:
        query += f"&arch={arch}"
    return f"pkg:oci/{_purl_part(name)}@{_purl_part(digest)}{query}"


def document(subject: Mapping[str, Any], components: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A CycloneDX document about `subject` (its metadata.component)."""
    order = {"machine-learning-model": 0, "application": 1, "library": 2}
    ordered = sorted(components, key=lambda c: (order.get(c["type"], 3), c["name"].lower(),
                                                c.get("version", ""), c["bom-ref"]))  # fmt: skip
    return {
        "$schema": SCHEMA,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, subject['bom-ref'])}",
        "version": 1,
        "metadata": {
            "tools": {
                "components": [
                    {"type": "application", "name": "edgemodel-operator", "version": __version__}
                ]
            },
            "component": dict(subject),
        },
        "components": [dict(c) for c in ordered],
    }


def image_document(
    repository: str, digest: str, config: Mapping[str, Any], files: Mapping[str, str],
    models: Mapping[str, Sequence[Any]],
) -> dict[str, Any]:  # fmt: skip
    """The SBOM of one platform image from its config and merged files."""
    arch = str(config.get("architecture") or "")
    settings = config.get("config") or {}
    labels = settings.get("Labels") or {}
    env = dict(e.split("=", 1) for e in settings.get("Env") or [] if "=" in e)
    os_release = _os_release(files)
    components = [
        *_model_components(models, labels),
        *_python_components(files),
        *_deb_components(files, os_release),
    ]
    if "PYTHON_VERSION" in env:  # the official python images build CPython into /usr/local
        purl = f"pkg:generic/cpython@{_purl_part(env['PYTHON_VERSION'])}"
        components.append({"type": "application", "bom-ref": purl, "name": "cpython",
                           "version": env["PYTHON_VERSION"], "purl": purl})  # fmt: skip
    if os_release.get("ID"):
        components.append({
            "type": "operating-system", "bom-ref": f"os:{os_release['ID']}",
            "name": os_release["ID"], "version": os_release.get("VERSION_ID", ""),
            "description": os_release.get("PRETTY_NAME", ""),
        })  # fmt: skip
    subject = {
        "type": "container", "bom-ref": _oci_purl(repository, digest, arch),
        "name": repository, "version": digest, "purl": _oci_purl(repository, digest, arch),
        "properties": [{"name": PLATFORM, "value": f"{config.get('os', 'linux')}/{arch}"}],
    }  # fmt: skip
    return document(subject, components)


def index_document(
    repository: str, digest: str, platforms: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The SBOM of an index: every component of its platform images (arch -> SBOM), once,
    each naming the platforms that hold it."""
    merged: dict[str, dict[str, Any]] = {}
    for arch, bom in sorted(platforms.items()):
        for component in bom["components"]:
            entry = merged.setdefault(component["bom-ref"], {**component, "properties": list(
                component.get("properties") or [])})  # fmt: skip
            entry["properties"].append({"name": PLATFORM, "value": f"linux/{arch}"})
    subject = {"type": "container", "bom-ref": _oci_purl(repository, digest), "name": repository,
               "version": digest, "purl": _oci_purl(repository, digest),
               "properties": [{"name": PLATFORM, "value": f"linux/{a}"}
                              for a in sorted(platforms)]}  # fmt: skip
    return document(subject, list(merged.values()))


class SbomMaker:
    """SBOMs of images in a registry; layer scans cached by digest in memory and on disk."""

    def __init__(self, registry: Registry, cache: Path) -> None:
        self._registry = registry
        self._cache = cache
        self._lock = threading.Lock()
        self._scans: dict[str, LayerScan] = {}

    def _layer(self, repository: str, digest: str) -> LayerScan:
        with self._lock:
            if digest in self._scans:
                return self._scans[digest]
        path = self._cache / f"{digest.replace(':', '-')}.json"
        if path.is_file():
            scan = LayerScan(**json.loads(path.read_text()))
        else:
            with self._registry.open_blob(repository, digest) as raw:
                hashing = _Hashing(raw)
                try:
                    scan = scan_layer(hashing)  # type: ignore[arg-type]
                except tarfile.TarError as err:
                    why = f"Layer {digest} of {repository} is not a tar: {err}"
                    raise RegistryError(why) from err
                hashing.drain()
            actual = "sha256:" + hashing.sha.hexdigest()
            if actual != digest:
                raise RegistryError(
                    f"The registry sent layer {digest} of {repository} with digest {actual}"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps(scan.__dict__))
            partial.replace(path)
        with self._lock:
            self._scans[digest] = scan
        return scan

    def image(self, repository: str, digest: str) -> dict[str, Any]:
        """The SBOM of the platform image repository@digest."""
        found = self._registry.raw_manifest(repository, digest)
        if found is None:
            raise RegistryError(f"{repository}@{digest} is not in the registry")
        manifest = json.loads(found[0])
        config = json.loads(self._registry.blob(repository, manifest["config"]["digest"]))
        scans = [self._layer(repository, str(layer["digest"])) for layer in manifest["layers"]]
        files, models = merge(scans)
        return image_document(repository, digest, config, files, models)
