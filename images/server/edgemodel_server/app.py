"""HTTP front of the server: routes, the request handler and the event loop.

Standard library only: a selectors event loop in one thread frames requests on HTTP/1.1
keep-alive connections, http.server's parser and `Handler` answer them, TCP_NODELAY on
accepted sockets so small responses are not held back by Nagle.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import selectors
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any

from edgemodel_server import SERVER_NAME, __version__, metrics, protocol
from edgemodel_server.config import ServerConfig
from edgemodel_server.model import Loaded, ServedModel

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
RECV_BYTES = 256 * 1024
LISTEN_BACKLOG = 128
EXTENSIONS = ["binary_tensor_data"]
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # zlib framing per encoding
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_MODEL_PATH = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?$"
)


class ModelServer:
    """The listening socket and an event loop over its connections, in one thread.

    Each request is answered start to finish before the next one: a model call takes
    microseconds to milliseconds and holds the GIL anyway, so a thread per connection only
    adds switching (p99 over 10 ms at 8 connections on 2 cores). Requests are framed here
    (headers, then Content-Length bytes of body) and answered by `Handler`, the standard
    library's HTTP/1.1 parser, on in-memory buffers. More cores are used by more processes
    on the same port (workers.py).
    """

    def __init__(self, config: ServerConfig, model: ServedModel, registry: metrics.Metrics):
        self.config = config
        self.model = model
        self.metrics = registry
        self.draining = False
        self._in_flight = 0
        self._idle = threading.Condition()
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.reuse_port:  # workers share the port (workers.py)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self.socket.bind((config.host, config.port))
            self.socket.listen(LISTEN_BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._selector = selectors.DefaultSelector()
        self._connections: dict[int, _Connection] = {}
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._checked_idle = 0.0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered; False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    # --- the loop -------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        selector = self._selector
        selector.register(self.socket, selectors.EVENT_READ, None)
        selector.register(self._waker_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, events in selector.select(poll_interval):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._waker_r.recv(64)
                    else:
                        self._serve(key.data, events)
                self._close_idle()
        finally:
            selector.unregister(self.socket)
            selector.unregister(self._waker_r)
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever() (from another thread) and wait until it has returned."""
        self._stop.set()
        self._waker_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        for conn in list(self._connections.values()):
            self._drop(conn)
        self.socket.close()
        self._waker_r.close()
        self._waker_w.close()
        self._selector.close()

    def _accept(self) -> None:
        for _ in range(64):  # whatever is waiting, a bounded batch at a time
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("Could not accept a connection: %s", err)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, address)
            self._connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn: _Connection) -> None:
        self._connections.pop(conn.fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _close_idle(self) -> None:
        now = time.monotonic()
        if now - self._checked_idle < 1.0:
            return
        self._checked_idle = now
        limit = now - Handler.timeout
        for conn in [c for c in self._connections.values() if c.last_active < limit]:
            self._drop(conn)

    def _serve(self, conn: _Connection, events: int) -> None:
        conn.last_active = time.monotonic()
        if events & selectors.EVENT_WRITE and not self._flush(conn):
            return
        if events & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._drop(conn)
                return
            conn.inbox += data
        while not conn.outbox and not conn.closing:
            request = conn.next_request()
            if request is None:
                if conn.expects_continue():
                    conn.outbox += b"HTTP/1.1 100 Continue\r\n\r\n"
                    self._flush(conn)
                return
            answer, close = _answer(self, request, conn.address)
            conn.outbox += answer
            conn.closing = close
            if not self._flush(conn):
                return
        if conn.closing and not conn.outbox:
            self._drop(conn)

    def _flush(self, conn: _Connection) -> bool:
        """Send what is queued; True when all of it went out."""
        while conn.outbox:
            try:
                sent = conn.sock.send(conn.outbox)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(conn)
                return False
            del conn.outbox[:sent]
        waiting = bool(conn.outbox)
        if waiting != conn.writing and conn.fd in self._connections:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if waiting else 0)
            self._selector.modify(conn.sock, events, conn)
            conn.writing = waiting
        if not conn.outbox and conn.closing:
            self._drop(conn)
            return False
        return not conn.outbox


class _Connection:
    """One client connection: bytes received and not yet answered, bytes not yet sent."""

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.closing = False
        self.writing = False  # registered for EVENT_WRITE
        self.last_active = time.monotonic()
        self._continued = False

    def _head(self) -> tuple[int, dict[str, str]] | None:
        end = self.inbox.find(b"\r\n\r\n")
        if end < 0:
            return None if len(self.inbox) < MAX_HEADER_BYTES else (len(self.inbox), {})
        fields: dict[str, str] = {}
        for line in bytes(self.inbox[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        return end + 4, fields

    def next_request(self) -> bytes | None:
        """The next complete request (head and body), or None while it is still arriving.
        A head the handler will refuse (chunked, no or a bad length, too large) is handed
        over alone; the answer closes the connection."""
        head = self._head()
        if head is None:
            return None
        size, fields = head
        body = 0
        if "chunked" not in fields.get("transfer-encoding", "").lower():
            try:
                body = int(fields.get("content-length", "0"))
            except ValueError:
                body = 0
            if not 0 <= body <= MAX_BODY_BYTES:
                body = 0
        if len(self.inbox) < size + body:
            return None
        request = bytes(self.inbox[: size + body])
        del self.inbox[: size + body]
        self._continued = False
        return request

    def expects_continue(self) -> bool:
        """True once per request whose client waits for "100 Continue" to send its body."""
        head = self._head()
        if head is None or self._continued:
            return False
        wants = head[1].get("expect", "").lower() == "100-continue"
        self._continued = wants
        return wants


def _answer(server: ModelServer, request: bytes, address: Any) -> tuple[bytes, bool]:
    """Run one request through `Handler` on in-memory buffers: (answer bytes, close)."""
    handler = _BufferedHandler(request, address, server)
    assert isinstance(handler.wfile, io.BytesIO)
    return handler.wfile.getvalue(), handler.close_connection


class Handler(BaseHTTPRequestHandler):
    server: ModelServer  # type: ignore[assignment]  # not a socketserver: see ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = f"{SERVER_NAME}/{__version__}"
    disable_nagle_algorithm = True  # TCP_NODELAY on the accepted socket
    timeout = 300  # seconds a kept-alive connection may idle (or a body may stall)
    request_id: str | None = None  # set while an inference is answered

    # --- plumbing -------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.server.draining:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload, separators=(",", ":")).encode())

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise protocol.ProtocolError("chunked request bodies are not supported", 411)
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise protocol.ProtocolError("a Content-Length header is required", 411)
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            raise protocol.ProtocolError(
                f"Content-Length must be 0..{MAX_BODY_BYTES}, got {raw_length!r}", 413
            )
        body = self.rfile.read(length)
        encoding = self.headers.get("Content-Encoding", "identity").lower()
        if encoding == "identity":
            return body
        if encoding not in _WBITS:
            raise protocol.ProtocolError(f"Content-Encoding {encoding} is not supported", 415)
        inflater = zlib.decompressobj(_WBITS[encoding])
        try:
            # Bounded, so a small compressed body cannot expand without limit.
            plain = inflater.decompress(body, MAX_BODY_BYTES + 1)
        except zlib.error as err:
            raise protocol.ProtocolError(f"the body is not valid {encoding}: {err}") from err
        if len(plain) > MAX_BODY_BYTES or inflater.unconsumed_tail:
            raise protocol.ProtocolError(f"the body inflates past {MAX_BODY_BYTES} bytes", 413)
        return plain

    def _dispatch(self, method: str) -> None:
        self.server.enter()
        self.body = b""
        try:
            if method == "POST":
                # Read the body before anything can fail, so keep-alive stays in step.
                try:
                    self.body = self._body()
                except protocol.ProtocolError:
                    self.close_connection = True
                    raise
            self._route(method)
        except protocol.ProtocolError as err:
            self._error(err.status, err.message)
        except Exception as err:
            log.exception("Failed to answer %s %s", method, self.path)
            self._error(500, f"internal error: {err}")
        finally:
            self.server.leave()

    def handle_expect_100(self) -> bool:
        return True  # the event loop sent "100 Continue" itself, before the body came

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # --- routes ---------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if method == "GET":
            if path == "/v2/health/live":
                return self._json(200, {"live": True})
            if path == "/v2/health/ready":
                return self._ready()
            if path == "/v2":
                return self._json(
                    200, {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}
                )
            if path == "/metrics":
                return self._send(200, self.server.metrics.render(), metrics.CONTENT_TYPE)
        match = _MODEL_PATH.match(path)
        if match is None:
            return self._error(404, f"no such endpoint: {method} {path}")
        rest = match["rest"] or ""
        if (method == "POST") != (rest == "/infer"):
            return self._error(405, f"{method} is not allowed on {path}")
        if rest == "/infer":
            return self._infer(match["name"], match["version"])
        self._check_model(match["name"], match["version"])
        if rest == "/ready":
            return self._ready()
        loaded = self._loaded()
        return self._json(200, self.server.model.metadata(loaded))

    def _check_model(self, name: str, version: str | None) -> None:
        model = self.server.model
        if name != model.name:
            raise protocol.ProtocolError(
                f"unknown model {name!r}; this server serves {model.name!r}", 404
            )
        if version is not None and version != model.version:
            raise protocol.ProtocolError(
                f"unknown version {version!r} of model {name!r}; it serves {model.version!r}",
                404,
            )

    def _loaded(self) -> Loaded:
        loaded = self.server.model.loaded
        if loaded is None:
            reason = self.server.model.ready_reason() or "the model is not loaded"
            raise protocol.ProtocolError(reason, 503)
        return loaded

    def _ready(self) -> None:
        reason = self.server.model.ready_reason()
        if self.server.draining:
            reason = "the server is shutting down"
        if reason is None:
            return self._json(200, {"ready": True})
        return self._error(503, reason)

    def _infer(self, name: str, version: str | None) -> None:
        model = self.server.model
        started = time.perf_counter()
        request_id = self.request_id = _request_id(self.headers.get(REQUEST_ID_HEADER))
        label = name if name == model.name else "_unknown"  # bounded label values
        status = 200
        inference: float | None = None
        batch: int | None = None
        try:
            with self.server.metrics.in_flight(label):
                self._check_model(name, version)
                loaded = self._loaded()
                header, binary = protocol.split_body(
                    self.body, self.headers.get(protocol.HEADER_LENGTH)
                )
                names = [spec.name for spec in loaded.outputs]
                request = protocol.decode_infer_request(header, binary, loaded.inputs, names)
                batch = _batch_size(request.inputs)
                ran = time.perf_counter()
                try:
                    results = model.run(loaded, request.inputs, request.outputs)
                finally:
                    inference = time.perf_counter() - ran
                payload, json_size = protocol.encode_infer_response(
                    model.name, model.version, request, results
                )
        except protocol.ProtocolError as err:
            status = err.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            seconds = time.perf_counter() - started
            self.server.metrics.observe_request(label, status, seconds, inference, batch)
            self._log_answer(request_id, label, status, seconds, batch)
        headers = {REQUEST_ID_HEADER: request_id}
        if json_size is None:
            self._send(200, payload, headers=headers)
        else:
            headers[protocol.HEADER_LENGTH] = str(json_size)
            self._send(200, payload, content_type="application/octet-stream", headers=headers)

    def _log_answer(
        self, request_id: str, model: str, status: int, seconds: float, batch: int | None
    ) -> None:
        """Every inference at DEBUG; failures at WARNING (400s) or ERROR, with the request id
        (the failure's own message goes with the answer)."""
        level = logging.DEBUG if status < 400 else logging.WARNING
        level = logging.ERROR if status >= 500 else level
        if log.isEnabledFor(level):
            fields = {"request_id": request_id, "model": model, "code": status,
                      "seconds": round(seconds, 6), "batch": batch}  # fmt: skip
            log.log(level, "Answered inference %s with %d", request_id, status, extra=fields)

    def _error(self, status: int, message: str) -> None:
        # A failed inference's id, to find its log line.
        headers = {REQUEST_ID_HEADER: self.request_id} if self.request_id else {}
        self._send(status, protocol.error_body(message), headers=headers)


def _request_id(given: str | None) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def _batch_size(inputs: Mapping[str, Any]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if getattr(array, "ndim", 0) else 1
    return 0


class _Headers(dict[str, str]):
    """Request headers by lower-case name, looked up case-insensitively like http.server's."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class _BufferedHandler(Handler):
    """Handler on a request already read into memory; the answer is left in wfile."""

    def __init__(self, request: bytes, address: Any, server: ModelServer) -> None:
        self._raw = request
        super().__init__(None, address, server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.rfile = io.BytesIO(self._raw)
        self.wfile = io.BytesIO()

    def handle(self) -> None:
        self.close_connection = True
        if not self._handle_simple():
            self.rfile.seek(0)
            self.handle_one_request()  # the standard library's parser, with its answers

    def _handle_simple(self) -> bool:
        """Answer a plain request (GET or POST, HTTP/1.0 or 1.1, one line per header) with
        a parser much cheaper than the email package http.server uses; False for anything
        else, which goes to http.server's parser."""
        head, _, _ = self._raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"POST"):
            return False
        if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].startswith(b"/"):
            return False
        fields = _Headers()
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            key = name.decode("latin-1").lower()
            if not colon or not name or name != name.strip() or key in fields:
                return False  # folded, malformed or repeated headers: the full parser
            fields[key] = value.strip().decode("latin-1")
        self.command = parts[0].decode()
        self.path = parts[1].decode("latin-1")
        self.request_version = parts[2].decode()
        self.requestline = lines[0].decode("latin-1")
        self.headers = fields  # type: ignore[assignment]
        self.rfile.seek(len(head) + 4)
        connection = fields.get("Connection", "").lower()
        if self.request_version == "HTTP/1.1":
            self.close_connection = connection == "close"
        else:
            self.close_connection = connection != "keep-alive"
        (self.do_GET if self.command == "GET" else self.do_POST)()
        return True

    def finish(self) -> None:
        pass


def create_server(config: ServerConfig, registry: metrics.Metrics | None = None) -> ModelServer:
    """Bind the server (port 0 picks a free one) and load the model: in a thread, so that
    readiness says "loading" meanwhile; or first, for one of several workers sharing the
    port (config.reuse_port), which must not take connections before it can answer them."""
    if registry is None:
        served = {"version": config.model_version, "accelerator": config.accelerator,
                  "precision": config.precision, "target": config.target,
                  "revision": config.revision}  # fmt: skip
        registry = metrics.Metrics(served)
    model = ServedModel(config, registry)
    if config.reuse_port:
        model.load()
        return ModelServer(config, model, registry)
    server = ModelServer(config, model, registry)
    threading.Thread(target=model.load, name="model-loader", daemon=True).start()
    return server


def drain(server: ModelServer, grace_seconds: float) -> bool:
    """Stop accepting, let in-flight requests finish (up to the grace period), close.

    Call from a thread other than the one running serve_forever(). True if every
    in-flight request finished in time.
    """
    server.draining = True  # readiness fails; answers close their connection
    server.metrics.set_ready(server.model.name, False)
    server.shutdown()  # returns once serve_forever() has stopped accepting
    finished = server.wait_idle(grace_seconds)
    server.server_close()
    return finished
