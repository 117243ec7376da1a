"""A fault-injecting proxy between a client (the operator, a builder) and a server (the API
server, a registry, a Docker Engine API), run on an asyncio loop in a thread of the test.

Clients speak plain HTTP/1.1 to 127.0.0.1:<port>; the proxy forwards each request on a new
upstream connection (TLS for the API server, TCP or a unix socket otherwise) and pipes the
answer back, streams included. One request per connection ("Connection: close"), so any
single answer can be replaced without desynchronising a kept-alive connection.

Faults, switched at any time from the test's thread:
- partition(): a silent partition. Nothing is forwarded in either direction and nothing is
  closed: open connections (watches) hang, new ones are accepted and hang too. heal()
  lets new connections through again; the hung ones stay hung (their flows are gone), so
  the client must time them out by itself.
- refuse(): connections refused (the listener is closed) and open ones reset; restore().
- rules: per request (method, path regex), answer with a status (429, 500, 503), delay it,
  end a watch with 410 Gone, or hold it unanswered until release().
Every request is logged (method, path, what happened) for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

REASONS = {
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
STATUS_REASON = {
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tls_upstream(host: str, port: int, ca_file: str) -> Connect:
    """The API server over TLS, verified by its CA, without a client certificate: the
    client's own bearer token is what authenticates it."""
    context = ssl.create_default_context(cafile=ca_file)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port, ssl=context, server_hostname=host)

    return connect


def tcp_upstream(host: str, port: int) -> Connect:
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port)

    return connect


def unix_upstream(path: str) -> Connect:
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(path)

    return connect


@dataclass
class Rule:
    """What to do with matching requests: `status` answers it (e.g. 429, 500), `gone` ends
    a watch with 410, `delay` holds it for seconds before forwarding, `hold` keeps it
    unanswered until release(). It lets the first `skip` matches through, then applies
    `times` times (None: always)."""

    method: str  # e.g. PATCH; "*" for any
    path: str  # a regex searched in the request target (path and query)
    status: int | None = None
    gone: bool = False
    delay: float = 0.0
    hold: bool = False
    retry_after: int | None = None
    times: int | None = None
    skip: int = 0
    seen: int = 0
    hits: int = 0
    hit: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, target: str) -> bool:
        """Whether it applies to this request (counting it as seen when it matches)."""
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method not in ("*", method) or re.search(self.path, target) is None:
            return False
        self.seen += 1
        return self.seen > self.skip


@dataclass
class Logged:
    at: float
    method: str
    target: str
    outcome: str  # forwarded <status> | injected <status> | gone | held | ...

    @property
    def watch(self) -> bool:
        return "watch=true" in self.target or "watch=1" in self.target


class FaultProxy:
    def __init__(self, upstream: Connect, name: str = "proxy") -> None:
        self.name = name
        self.port = free_port()
        self._upstream = upstream
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.log: list[Logged] = []
        self._partitioned = False
        self._flows: dict[int, bool] = {}  # connection id -> alive (False: partitioned off)
        self._next_flow = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._released = asyncio.Event()
        self._forward_held = True
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- lifecycle (test thread)

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.name} did not start")
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        # No new connection once stopping: one accepted as the loop stops leaves its
        # handler never awaited.
        self._call(self._stop_listening)
        self._call(self._close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults (test thread)

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
        self.release()

    def release(self, forward: bool = True) -> None:
        """Let held requests go on (forwarded as if nothing happened), or drop them
        unanswered (forward=False: their client is gone, as after a SIGKILL)."""
        self._forward_held = forward
        self._loop.call_soon_threadsafe(self._released.set)

    def partition(self) -> None:
        with self._lock:
            self._partitioned = True
            self._flows = dict.fromkeys(self._flows, False)

    def heal(self) -> None:
        with self._lock:
            self._partitioned = False

    def cut(self) -> None:
        """Close every open connection (watches included), as a restarting server does."""
        self._call(self._close_all)

    def refuse(self) -> None:
        self._call(self._stop_listening)
        self.cut()

    def restore(self) -> None:
        self._call(self._listen)

    def requests(self, method: str = "*", path: str = "") -> list[Logged]:
        with self._lock:
            return [
                e
                for e in self.log
                if method in ("*", e.method) and re.search(path, e.target) is not None
            ]

    # -- the loop (proxy thread)

    def _call(self, fn: Callable[[], Awaitable[None]]) -> None:
        asyncio.run_coroutine_threadsafe(fn(), self._loop).result(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _close_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    def _record(self, method: str, target: str, outcome: str) -> Logged:
        entry = Logged(time.time(), method, target, outcome)
        with self._lock:
            self.log.append(entry)
        return entry

    def _alive(self, flow: int) -> bool:
        with self._lock:
            return self._flows.get(flow, False)

    async def _forever(self) -> None:
        await asyncio.Event().wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            flow = self._next_flow
            self._next_flow += 1
            self._flows[flow] = not self._partitioned  # accepted in a partition: never works
        self._writers.add(writer)
        try:
            if not self._alive(flow):
                await self._forever()
            head = await reader.readuntil(b"\r\n\r\n")
            body = await _read_body(reader, head)
            if not self._alive(flow):
                await self._forever()
            method, target = head.split(b" ", 2)[:2]
            await self._serve(method.decode(), target.decode(), head, body, writer, flow)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with self._lock:
                self._flows.pop(flow, None)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(
        self, method: str, target: str, head: bytes, body: bytes,
        writer: asyncio.StreamWriter, flow: int,
    ) -> None:  # fmt: skip
        with self._lock:
            rule = next((r for r in self._rules if r.matches(method, target)), None)
            if rule is not None:
                rule.hits += 1
        if rule is not None:
            rule.hit.set()
            if rule.hold:
                entry = self._record(method, target, "held")
                self._released.clear()
                await self._released.wait()
                if not self._forward_held:
                    entry.outcome = "dropped"
                    return
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.gone:
                self._record(method, target, "gone")
                writer.write(_watch_gone())
                await writer.drain()
                return
            if rule.status is not None:
                self._record(method, target, f"injected {rule.status}")
                writer.write(_status_answer(rule.status, rule.retry_after))
                await writer.drain()
                return
        entry = self._record(method, target, "forwarding")
        up_reader, up_writer = await self._upstream()
        self._writers.add(up_writer)
        try:
            up_writer.write(_close_after(head) + body)
            await up_writer.drain()
            first = True
            while chunk := await up_reader.read(65536):
                if not self._alive(flow):
                    await self._forever()
                if first:
                    entry.outcome = "forwarded " + chunk.split(b" ", 2)[1].decode(errors="replace")
                    first = False
                writer.write(chunk)
                await writer.drain()
        finally:
            self._writers.discard(up_writer)
            with contextlib.suppress(Exception):
                up_writer.close()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    headers = head.lower()
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", headers)
    if match:
        return await reader.readexactly(int(match.group(1)))
    if re.search(rb"\r\ntransfer-encoding:\s*chunked", headers):
        out = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            out += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            data = await reader.readexactly(size + 2)
            out += data
            if size == 0:
                return out
    return b""


def _close_after(head: bytes) -> bytes:
    """The request head, asking the server to close the connection after its answer."""
    lines = [
        line
        for line in head.rstrip(b"\r\n").split(b"\r\n")
        if not line.lower().startswith((b"connection:", b"keep-alive:"))
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _status_answer(code: int, retry_after: int | None) -> bytes:
    reason = STATUS_REASON.get(code, "InternalError")
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"injected by the fault proxy: {REASONS.get(code, 'error')}",
        "reason": reason,
        "code": code,
    }
    extra = ""
    if retry_after is not None:
        status["details"] = {"retryAfterSeconds": retry_after}
        extra = f"Retry-After: {retry_after}\r\n"
    payload = json.dumps(status).encode()
    return (
        f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + payload


def _watch_gone() -> bytes:
    """What the API server streams when a watch asks for a resource version it no longer
    has: 200, then one ERROR event carrying a 410 Status, then the end."""
    event = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "too old resource version (injected by the fault proxy)",
            "reason": "Expired",
            "code": 410,
        },
    }
    payload = json.dumps(event).encode() + b"\n"
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + payload
    )
