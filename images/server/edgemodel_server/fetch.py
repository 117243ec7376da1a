"""`python -m edgemodel_server.fetch`: put the model a pod serves in place, verified.

Runs as the init container of a model-server pod whose image carries no model: downloads
EDGEMODEL_MODEL_URI (http, https or file) to EDGEMODEL_MODEL_PATH, an emptyDir shared with
the server, and checks its sha256 against EDGEMODEL_MODEL_SHA256 before the server starts.
A file already there with the right digest (the pod restarted) is kept.

Exit status and the termination message (what `kubectl describe pod` and the operator
show) say what went wrong: 2 the model could not be fetched, 3 its digest differs (the
bytes are deleted: nothing unverified is ever served). Standard library only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgemodel_server import logs
from edgemodel_server.termination import terminate

log = logging.getLogger("edgemodel_server.fetch")

CHUNK = 1 << 20
TIMEOUT_SECONDS = 30.0
BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0)  # between attempts; then the pod's restart backoff


class FetchFailed(Exception):
    """The model could not be fetched; `retry` when trying again may help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class DigestMismatch(Exception):
    pass


@dataclass(frozen=True)
class Request:
    uri: str
    sha256: str
    path: Path


def request_from(env: Mapping[str, str]) -> Request:
    uri = env.get("EDGEMODEL_MODEL_URI", "").strip()
    sha = env.get("EDGEMODEL_MODEL_SHA256", "").strip().lower()
    if not uri.startswith(("http://", "https://", "file://")):
        raise ValueError(f"EDGEMODEL_MODEL_URI must be an http(s):// or file:// URI, got {uri!r}")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError("EDGEMODEL_MODEL_SHA256 must be 64 hex characters")
    path = Path(env.get("EDGEMODEL_MODEL_PATH", "/models/model.onnx"))
    return Request(uri, sha, path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(uri: str, dest: Path) -> str:
    """Stream `uri` into dest; its sha256."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(uri, timeout=TIMEOUT_SECONDS) as src, dest.open("wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as err:
        # 4xx: the URI is wrong and stays wrong; 5xx: the store may recover.
        raise FetchFailed(f"{uri} answered HTTP {err.code} {err.reason}", err.code >= 500) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchFailed(f"could not download {uri}: {reason}") from err
    return digest.hexdigest()


def _download_with_retries(uri: str, dest: Path, sleep: Callable[[float], None]) -> str:
    for attempt, pause in enumerate(BACKOFF_SECONDS, start=1):
        try:
            return download(uri, dest)
        except FetchFailed as err:
            if not err.retry:
                raise
            log.warning("Attempt %d: %s; retrying in %.0f s", attempt, err, pause)
            sleep(pause)
    return download(uri, dest)


def fetch(request: Request, sleep: Callable[[float], None] = time.sleep) -> None:
    if request.path.is_file() and sha256_of(request.path) == request.sha256:
        log.info("The model at %s is already in place and verified", request.path)
        return
    request.path.parent.mkdir(parents=True, exist_ok=True)
    partial = request.path.with_name(request.path.name + ".partial")
    try:
        actual = _download_with_retries(request.uri, partial, sleep)
    except FetchFailed:
        partial.unlink(missing_ok=True)
        raise
    if actual != request.sha256:
        partial.unlink(missing_ok=True)
        raise DigestMismatch(
            f"{request.uri} has sha256 {actual}, but spec.model.sha256 is {request.sha256}; "
            "it was not served"
        )
    partial.replace(request.path)
    log.info("Fetched %s to %s (sha256 %s verified)", request.uri, request.path, actual)


def main() -> int:
    fmt = "text" if os.environ.get("EDGEMODEL_LOG_FORMAT", "").strip().lower() == "text" else "json"
    logs.configure("INFO", fmt)
    try:
        request = request_from(os.environ)
    except ValueError as err:
        return terminate("InvalidConfiguration", str(err), 2)
    started = time.monotonic()
    try:
        fetch(request)
    except DigestMismatch as err:
        return terminate("ModelDigestMismatch", str(err), 3)
    except FetchFailed as err:
        return terminate("ModelFetchFailed", str(err), 2)
    log.info("Done in %.1f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
