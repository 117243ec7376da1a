"""Leader election between operator replicas on a Lease (decisions in reconcile/lease.py).

acquire() blocks until this replica holds the Lease, then a thread renews it every
retry period. A leader that cannot renew within the renew deadline (two thirds of the
lease) stops at once (`on_lost`): by then another replica may take over, and two leaders
must never act. release() hands the Lease over on a clean exit, so the next replica takes
over within a retry period instead of a whole lease."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes import client

from edgemodel_operator.adapters.rest import Rest, path
from edgemodel_operator.reconcile.lease import Move, Observed, decide, observe, spec_for

LOG = structlog.get_logger("edgemodel_operator.leader")


def identity() -> str:
    """The pod's name (its hostname) plus a random suffix: a restarted pod is a new holder."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class LeaseElector:
    def __init__(
        self, api: client.ApiClient, namespace: str, name: str, duration: float,
        timeout: tuple[float, float], me: str | None = None,
    ) -> None:  # fmt: skip
        self._rest = Rest(api, timeout)
        self.namespace, self.name = namespace, name
        self.duration = duration
        self.retry_period = max(1.0, duration / 7)
        self.renew_deadline = duration * 2 / 3
        self._timeout = timeout
        self.me = me or identity()
        self._seen: Observed | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        try:
            return self._rest.json("GET", self._path(self.name))
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise

    def _path(self, name: str | None = None) -> str:
        return path("coordination.k8s.io", "v1", "leases", self.namespace, name)

    def try_once(self) -> bool:
        """One round: read the Lease, then create, take or renew it if the rules allow."""
        raw = self._read()
        meta = (raw or {}).get("metadata") or {}
        spec = (raw.get("spec") or {}) if raw is not None else None
        version = str(meta.get("resourceVersion", ""))
        self._seen = observe(spec, version, self._seen, time.monotonic())
        move = decide(self._seen, self.me, time.monotonic())
        if move is Move.WAIT:
            return False
        wanted = spec_for(self._seen, self.me, self.duration, datetime.now(UTC))
        try:
            if move is Move.CREATE:
                body = {"metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": wanted}  # fmt: skip
                self._rest.send("POST", self._path(), body)
            else:
                assert raw is not None
                body = {**raw, "spec": {**(raw.get("spec") or {}), **wanted}}
                self._rest.send("PUT", self._path(self.name), body)
        except client.ApiException as err:
            if err.status in (404, 409):  # another replica moved first
                return False
            raise
        if move is not Move.RENEW:
            previous = self._seen.holder if self._seen else None
            LOG.info(f"Became the leader (Lease {self.namespace}/{self.name})",
                     identity=self.me, previous=previous)  # fmt: skip
        return True

    def acquire(self) -> None:
        """Block until this replica leads; then keep renewing on a thread."""
        waiting_logged = False
        while not self._attempt():
            if not waiting_logged and self._seen is not None:
                LOG.info(f"Standing by: {self._seen.holder} holds Lease "
                         f"{self.namespace}/{self.name}", identity=self.me)  # fmt: skip
                waiting_logged = True
            time.sleep(self.retry_period)

    def keep(self, on_lost: Callable[[str], None]) -> None:
        def renew() -> None:
            last = time.monotonic()
            while not self._stop.wait(self.retry_period):
                if self._attempt():
                    last = time.monotonic()
                elif time.monotonic() - last > self.renew_deadline:
                    on_lost(f"Lost the Lease {self.namespace}/{self.name}: not renewed for "
                            f"{time.monotonic() - last:.0f}s")  # fmt: skip
                    return

        self._thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
        self._thread.start()

    def _attempt(self) -> bool:
        try:
            return self.try_once()
        except Exception as err:  # the API server unreachable, a timeout: try again later
            LOG.warning("Could not read or write the leader Lease", error=str(err))
            return False

    def release(self) -> None:
        """Hand the Lease over (holder emptied), if this replica still holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._timeout[0] + self._timeout[1])
        try:
            raw = self._read()
            if raw is None or (raw.get("spec") or {}).get("holderIdentity") != self.me:
                return
            body = {**raw, "spec": {**raw["spec"], "holderIdentity": "",
                                    "leaseDurationSeconds": 1}}  # fmt: skip
            self._rest.send("PUT", self._path(self.name), body)
            LOG.info(f"Released the Lease {self.namespace}/{self.name}", identity=self.me)
        except Exception as err:
            LOG.warning("Could not release the leader Lease", error=str(err))
