"""Download of model artifacts and samples: http(s):// (streamed) and file:// URIs.

The file appears under `dest` only when complete (written beside it, then renamed), so
an interrupted download never passes for a model. Integrity is checked by the caller
(optimize.digest.verify) against the sha256 in the spec.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests

CHUNK_BYTES = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0  # between two chunks, not for the whole download


class FetchError(Exception):
    """The artifact could not be fetched; the message names the URI and the cause."""


def _file_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"{uri}: file:// URIs must name a local path (file:///path)")
    return Path(url2pathname(unquote(parts.path)))


def fetch(
    uri: str,
    dest: Path,
    *,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
    session: requests.Session | None = None,
) -> Path:
    """Fetch `uri` into the file `dest` (its folder is created) and return `dest`."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise FetchError(f"{uri}: unsupported scheme {scheme or '(none)'!r}; use http(s) or file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if scheme == "file":
                source = _file_path(uri)
                try:
                    with source.open("rb") as stream:
                        shutil.copyfileobj(stream, out, CHUNK_BYTES)
                except OSError as err:
                    raise FetchError(f"{uri}: cannot read {source}: {err}") from err
            else:
                _download(uri, out, timeout, session)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _download(
    uri: str,
    out: BinaryIO,
    timeout: tuple[float, float],
    session: requests.Session | None,
) -> None:
    getter = session if session is not None else requests
    try:
        with getter.get(uri, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise FetchError(f"{uri}: HTTP {response.status_code} {response.reason}")
            # With a Content-Encoding, requests decodes and the length no longer applies.
            encoded = response.headers.get("Content-Encoding", "identity") != "identity"
            expected = None if encoded else response.headers.get("Content-Length")
            written = 0
            for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
    except requests.RequestException as err:
        raise FetchError(f"{uri}: {err}") from err
    if expected is not None and expected.isdigit() and int(expected) != written:
        raise FetchError(f"{uri}: got {written} bytes, the server announced {expected}")
