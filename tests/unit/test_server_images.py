"""The server-image resolver asks the registry at most once a minute per tag, whether the
answer was found or failed: every reconcile asks it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from edgemodel_operator.adapters import server_images
from edgemodel_operator.adapters.image_errors import RegistryError


@dataclass
class Manifest:
    digest: str
    platforms: dict[str, str]


class FakeRegistry:
    calls = 0
    down = True

    def __init__(self, **_: Any) -> None:
        pass

    def manifest(self, repo: str, ref: str) -> Manifest:
        FakeRegistry.calls += 1
        if FakeRegistry.down:
            raise RegistryError("Could not reach the registry")
        return Manifest("sha256:" + "a" * 64, {"amd64": "x", "arm64": "y"})


def test_a_failed_lookup_waits_a_minute_and_an_answer_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_images, "Registry", FakeRegistry)
    now = [0.0]
    resolver = server_images.ServerImageResolver(clock=lambda: now[0])
    ref = "registry.site:5000/edgemodel-server:0.1.0-cpu"
    assert resolver.resolve(ref) is None and FakeRegistry.calls == 1
    now[0] = 30
    assert resolver.resolve(ref) is None and FakeRegistry.calls == 1  # not asked again
    now[0] = 61
    FakeRegistry.down = False
    found = resolver.resolve(ref)
    assert found is not None and FakeRegistry.calls == 2
    assert found.reference.endswith("@sha256:" + "a" * 64) and found.archs == ("amd64", "arm64")
    FakeRegistry.down = True
    now[0] = 200  # stale, and the registry is down again: the last answer stays
    assert resolver.resolve(ref) == found and FakeRegistry.calls == 3
    now[0] = 210
    assert resolver.resolve(ref) == found and FakeRegistry.calls == 3


def test_threads_asking_while_a_lookup_is_under_way_do_not_ask_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver = server_images.ServerImageResolver()
    ref = "registry.site:5000/edgemodel-server:0.1.0-npu"
    inner: list[Any] = []

    class SlowRegistry(FakeRegistry):
        def manifest(self, repo: str, ref_: str) -> Manifest:
            inner.append(resolver.resolve(ref))  # another thread asking meanwhile
            return super().manifest(repo, ref_)

    monkeypatch.setattr(server_images, "Registry", SlowRegistry)
    FakeRegistry.calls, FakeRegistry.down = 0, True
    assert resolver.resolve(ref) is None
    assert inner == [None] and FakeRegistry.calls == 1
