"""The Docker API lost mid-build or mid-push: a retryable failure that says so, not a
connection error's bare repr (urllib3 raises its own errors while a stream is read)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from edgemodel_operator.adapters.docker_engine import DockerEngine
from edgemodel_operator.adapters.image_errors import BuildFailed, PushFailed

BROKEN = urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(0 bytes read)", None)


def cut_stream(*_: Any, **__: Any) -> Iterator[dict[str, str]]:
    yield {"stream": "STEP 1/3: FROM server"}
    raise BROKEN


class Api:
    build = push = staticmethod(cut_stream)


class Client:
    api = Api()


def engine() -> DockerEngine:
    found = DockerEngine("tcp://127.0.0.1:2375")
    found._client = Client()
    return found


def test_the_api_lost_mid_build(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(BuildFailed, match=r"Lost the Docker API at tcp://127\.0\.0\.1:2375 while "
                       r"building reg/m:t: .*Connection broken"):  # fmt: skip
        engine().build(tmp_path, "reg/m:t", {}, lines.append)
    assert lines == ["STEP 1/3: FROM server"]


def test_the_api_lost_mid_push() -> None:
    with pytest.raises(PushFailed, match=r"Lost the Docker API .* while pushing reg/m:t"):
        engine().push("reg/m", "t", lambda _: None)
