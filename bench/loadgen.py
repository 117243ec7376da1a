"""Load generator for the serving suite, run in a process of its own.

`python loadgen.py --port P --model NAME --kind json|binary --concurrency C --requests N`
opens C kept-alive connections to 127.0.0.1:P and keeps one Open Inference Protocol
request in flight on each (one thread, a selectors loop, so the generator itself needs
little CPU), N requests per connection after a warm-up, and prints one JSON line: requests
per second, p50/p99 latency in ms, the number of requests and of failed answers. Every
answer is checked: HTTP 200 and the expected output in it.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time

import numpy as np

WARMUP = 20


def request_bytes(model: str, kind: str, row: np.ndarray) -> bytes:
    path = f"/v2/models/{model}/infer"
    tensor = {"name": "input", "shape": list(row.shape), "datatype": "FP32"}
    if kind == "json":
        body = json.dumps({"inputs": [{**tensor, "data": row.ravel().tolist()}],
                           "outputs": [{"name": "probabilities"}]}).encode()  # fmt: skip
        extra = "Content-Type: application/json\r\n"
    else:
        raw = np.ascontiguousarray(row, dtype="<f4").tobytes()
        header = json.dumps({
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }).encode()  # fmt: skip
        body = header + raw
        extra = (f"Content-Type: application/octet-stream\r\n"
                 f"Inference-Header-Content-Length: {len(header)}\r\n")  # fmt: skip
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


class Connection:
    def __init__(self, port: int, request: bytes, budget: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.request = request
        self.left = budget
        self.buf = b""
        self.sent_at = 0.0

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.sock.setblocking(True)
        self.sock.sendall(self.request)
        self.sock.setblocking(False)

    def answer(self) -> bytes | None:
        """The body of a complete answer, once it is all there."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buf[:end].decode("latin-1")
        fields = dict(line.lower().split(":", 1) for line in head.split("\r\n")[1:])
        if "chunked" in fields.get("transfer-encoding", ""):  # uvicorn's binary answers
            body, stop = _dechunk(self.buf, end + 4)
            if body is None:
                return None
        else:
            length = int(fields["content-length"])
            if len(self.buf) < end + 4 + length:
                return None
            body, stop = self.buf[end + 4 : end + 4 + length], end + 4 + length
        if not head.startswith("HTTP/1.1 200"):
            raise RuntimeError(f"answer {head.splitlines()[0]!r}: {body[:200]!r}")
        self.buf = self.buf[stop:]
        return body


def _dechunk(buf: bytes, at: int) -> tuple[bytes | None, int]:
    """A chunked body starting at `at`: (body, where it ends), or (None, 0) if incomplete."""
    parts = []
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None, 0
        size = int(buf[at:eol].split(b";")[0], 16)
        if len(buf) < eol + 2 + size + 2:
            return None, 0
        if size == 0:
            return b"".join(parts), eol + 4
        parts.append(buf[eol + 2 : eol + 2 + size])
        at = eol + 2 + size + 2


def run(port: int, model: str, kind: str, concurrency: int, requests: int) -> dict[str, float]:
    row = np.random.default_rng(0).random((1, 64), dtype=np.float32) * 16
    request = request_bytes(model, kind, row)
    sel = selectors.DefaultSelector()
    conns = [Connection(port, request, WARMUP + requests) for _ in range(concurrency)]
    latencies: list[float] = []
    started, ended = float("inf"), 0.0  # first measured request sent, last answer
    for conn in conns:
        sel.register(conn.sock, selectors.EVENT_READ, conn)
        conn.send()
    active = len(conns)
    while active:
        for key, _ in sel.select(30):
            conn = key.data
            chunk = conn.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            conn.buf += chunk
            body = conn.answer()
            if body is None:
                continue
            if b"probabilities" not in body:
                raise RuntimeError(f"no probabilities in the answer: {body[:200]!r}")
            now = time.perf_counter()
            if WARMUP + requests - conn.left >= WARMUP:  # past this connection's warm-up
                latencies.append((now - conn.sent_at) * 1000.0)
                ended = now
            conn.left -= 1
            if conn.left:
                conn.send()
                if conn.left == requests:
                    started = min(started, conn.sent_at)
            else:
                sel.unregister(conn.sock)
                conn.sock.close()
                active -= 1
    wall = ended - started
    return {
        "requests_per_s": round(len(latencies) / wall, 1) if wall > 0 else 0.0,
        "ms_p50": round(float(np.percentile(latencies, 50)), 4),
        "ms_p99": round(float(np.percentile(latencies, 99)), 4),
        "requests": len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--kind", choices=["json", "binary"], required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True, help="per connection")
    args = parser.parse_args()
    result = run(args.port, args.model, args.kind, args.concurrency, args.requests)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
