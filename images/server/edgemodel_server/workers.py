"""Several server processes on one port: one per usable core, sharing it with SO_REUSEPORT.

One Python process answers requests on one core at a time (the GIL), so under concurrent
load a single process queues them. With `EDGEMODEL_WORKERS` above 1 (or `auto`), the
process started by `python -m edgemodel_server` becomes a supervisor: it starts that many
copies of itself, each a complete server with its own model session and
`EDGEMODEL_INTRA_OP_THREADS` onnxruntime threads, all listening on the same port with
SO_REUSEPORT so the kernel spreads connections over them. The supervisor forwards SIGTERM
and SIGINT, and when one worker exits on its own it stops the others and exits with that
worker's status, so the container restarts as a whole.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from types import FrameType

from edgemodel_server.config import ServerConfig
from edgemodel_server.cpus import usable_cpus
from edgemodel_server.metrics import MULTIPROC_ENV, worker_exited

log = logging.getLogger("edgemodel_server")
WORKER_ENV = "EDGEMODEL_WORKER_INDEX"  # set in the workers' environment


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_listening(host: str, port: int, children: list[subprocess.Popen[bytes]]) -> None:
    """Return once the port takes connections (so the port logged next is usable), or a
    worker has exited, or 60 s have passed."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and all(c.poll() is None for c in children):
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)


def supervise(config: ServerConfig, environ: Mapping[str, str]) -> int:
    """Run `config.workers` worker processes until a signal or a worker's exit."""
    port = config.port or _free_port(config.host)
    threads = config.intra_op_threads or max(1, usable_cpus() // config.workers)
    # The workers' metrics, summed by whichever worker answers a scrape.
    figures = tempfile.mkdtemp(prefix="edgemodel-metrics-")
    children: list[subprocess.Popen[bytes]] = []
    asked: list[int] = []  # signals received: a stop that was asked for
    failed: list[int] = []  # a worker's own exit: a stop that was not

    def forward(signum: int) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        asked.append(signum)
        forward(signum)

    # Before any worker starts: a stop asked for while they load is forwarded, not fatal.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for index in range(config.workers):
        env = {**environ, WORKER_ENV: str(index), "EDGEMODEL_WORKERS": "1",
               "EDGEMODEL_PORT": str(port), "EDGEMODEL_INTRA_OP_THREADS": str(threads),
               MULTIPROC_ENV: figures}  # fmt: skip
        children.append(subprocess.Popen([sys.executable, "-m", "edgemodel_server"], env=env))
    _wait_listening(config.host, port, children)
    log.info(
        "Serving model %s (%s, accelerator %s) on http://%s:%d with %d worker processes "
        "(%d onnxruntime threads each)",
        config.model_name, config.model_path, config.accelerator, config.host, port,
        config.workers, threads,
    )  # fmt: skip
    gone: set[int] = set()
    while any(child.poll() is None for child in children):
        exited = [c.returncode for c in children if c.returncode is not None]
        for child in children:
            if child.returncode is not None and child.pid not in gone:
                gone.add(child.pid)
                worker_exited(child.pid, figures)
        if exited and not asked and not failed:  # one worker ended on its own: end them all
            failed.append(exited[0])
            log.error("A worker exited with status %s; stopping the others", exited[0])
            forward(signal.SIGTERM)
        time.sleep(0.1)
    shutil.rmtree(figures, ignore_errors=True)
    codes = [c.returncode for c in children]
    if failed:
        status = failed[0] if failed[0] > 0 else 1  # killed by a signal counts as a failure
    else:
        status = max((code for code in codes if code > 0), default=0)
    log.info("Stopped")
    return status
