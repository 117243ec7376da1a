"""HTTP front of the server: routes, the request handler and the threaded server.

Standard library only (http.server): one thread per connection, HTTP/1.1 keep-alive,
TCP_NODELAY on accepted sockets so small responses are not held back by Nagle.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgemodel_server import SERVER_NAME, __version__, metrics, protocol
from edgemodel_server.config import ServerConfig
from edgemodel_server.model import Loaded, ServedModel

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024 * 1024
EXTENSIONS = ["binary_tensor_data"]
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # zlib framing per encoding
_MODEL_PATH = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?$"
)


class ModelServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its model, its metrics and its in-flight requests."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, config: ServerConfig, model: ServedModel, registry: metrics.Metrics):
        self.config = config
        self.model = model
        self.metrics = registry
        self.draining = False
        self._in_flight = 0
        self._idle = threading.Condition()
        super().__init__((config.host, config.port), Handler)

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


class Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = f"{SERVER_NAME}/{__version__}"
    disable_nagle_algorithm = True  # TCP_NODELAY on the accepted socket
    timeout = 300  # seconds a kept-alive connection may idle (or a body may stall)

    # --- plumbing -------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
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

    def _error(self, status: int, message: str) -> None:
        self._send(status, protocol.error_body(message))

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
                text = self.server.metrics.render().encode()
                return self._send(200, text, content_type=metrics.CONTENT_TYPE)
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
        status = 200
        reached_model = False
        try:
            self._check_model(name, version)
            loaded = self._loaded()
            header, binary = protocol.split_body(
                self.body, self.headers.get(protocol.HEADER_LENGTH)
            )
            names = [spec.name for spec in loaded.outputs]
            request = protocol.decode_infer_request(header, binary, loaded.inputs, names)
            reached_model = True
            results = model.run(loaded, request.inputs, request.outputs)
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
            seconds = time.perf_counter() - started if reached_model else None
            label = name if name == model.name else "_unknown"  # bounded label values
            self.server.metrics.observe_request(label, status, seconds)
        if json_size is None:
            self._send(200, payload)
        else:
            self._send(
                200,
                payload,
                content_type="application/octet-stream",
                headers={protocol.HEADER_LENGTH: str(json_size)},
            )


def create_server(config: ServerConfig, registry: metrics.Metrics | None = None) -> ModelServer:
    """Bind the server (port 0 picks a free one) and start loading the model in a thread."""
    registry = registry if registry is not None else metrics.Metrics()
    model = ServedModel(config, registry)
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
