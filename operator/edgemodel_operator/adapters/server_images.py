"""The model-server images by digest: a tag such as edgemodel-server:0.1.0-cpu is resolved to
repository@sha256:<index digest> through the registry's API, with the architectures the
index serves, so that pods never run whatever a node happens to have cached under a tag,
and targets only go where the image can run.

Answers are kept for a minute; when the registry cannot be reached, the last answer stays,
and a tag never resolved is used as it is (the node resolves it when it pulls). A failed
lookup is not tried again for a minute either, and while one thread looks a tag up the
others take the last answer: every reconcile asks, and a registry that does not answer
must not slow them all down (nor fill the log)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from edgemodel_operator.adapters.image_errors import RegistryError
from edgemodel_operator.adapters.registry import Registry, split_reference, split_repository

LOG = structlog.get_logger("edgemodel_operator.images")
TTL_SECONDS = 60.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class Resolved:
    reference: str  # repository@sha256:... (the index)
    archs: tuple[str, ...]  # the architectures it serves


def _local(host: str) -> bool:
    return host.split(":")[0] in LOCAL_HOSTS or host.startswith("[::1]")


class ServerImageResolver:
    def __init__(
        self,
        insecure_hosts: tuple[str, ...] = (),
        auth: Mapping[str, Mapping[str, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._insecure = insecure_hosts  # plain HTTP; loopback registries always are
        self._auth = dict(auth or {})  # host -> {"username", "password"}
        self._clock = clock
        self._known: dict[str, tuple[float, Resolved]] = {}
        self._failed: dict[str, float] = {}  # reference -> when its lookup last failed
        self._asking: set[str] = set()  # references being looked up by another thread
        self._registries: dict[str, Registry] = {}  # one client (and connection pool) per host
        self._lock = threading.Lock()

    def resolve(self, reference: str) -> Resolved | None:
        """The index behind `reference` by digest; None while it was never found."""
        repo, ref = split_reference(reference)
        if ref.startswith("sha256:"):
            return None  # already pinned: nothing to resolve (its platforms stay unknown)
        with self._lock:
            cached = self._known.get(reference)
            failed = self._failed.get(reference)
            now = self._clock()
            fresh = cached is not None and now - cached[0] < TTL_SECONDS
            waiting = failed is not None and now - failed < TTL_SECONDS
            if fresh or waiting or reference in self._asking:  # one lookup at a time
                return cached[1] if cached else None
            self._asking.add(reference)
        try:
            return self._lookup(reference, repo, ref, cached)
        finally:
            with self._lock:
                self._asking.discard(reference)

    def _lookup(
        self, reference: str, repo: str, ref: str, cached: tuple[float, Resolved] | None
    ) -> Resolved | None:
        host, _ = split_repository(repo)
        with self._lock:
            registry = self._registries.get(host)
            if registry is None:
                registry = self._registries[host] = Registry(
                    insecure=_local(host) or host in self._insecure, auth=self._auth.get(host),
                    timeout=5,
                )  # fmt: skip
        try:
            manifest = registry.manifest(repo, ref)
        except RegistryError as err:
            LOG.warning("Could not resolve the server image", image=reference, error=str(err))
            return self._failure(reference, cached)
        if manifest is None:
            LOG.warning("The server image is not in its registry", image=reference)
            return self._failure(reference, cached)
        archs = tuple(sorted(manifest.platforms)) if manifest.platforms else ()
        found = Resolved(f"{repo}@{manifest.digest}", archs)
        with self._lock:
            self._known[reference] = (self._clock(), found)
            self._failed.pop(reference, None)
        return found

    def close(self) -> None:
        with self._lock:
            for registry in self._registries.values():
                registry.close()
            self._registries.clear()

    def _failure(self, reference: str, cached: tuple[float, Resolved] | None) -> Resolved | None:
        with self._lock:
            self._failed[reference] = self._clock()
        return cached[1] if cached else None
