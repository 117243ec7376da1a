"""`python -m edgemodel_server`: serve the model named by the EDGEMODEL_* variables."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from edgemodel_server import logs
from edgemodel_server.app import ModelServer, create_server, drain
from edgemodel_server.config import ConfigError, load_config
from edgemodel_server.termination import terminate
from edgemodel_server.workers import supervise

log = logging.getLogger("edgemodel_server")


def main() -> int:
    fmt = "text" if os.environ.get("EDGEMODEL_LOG_FORMAT", "").strip().lower() == "text" else "json"
    logs.configure(os.environ.get("EDGEMODEL_LOG_LEVEL", "INFO"), fmt)
    try:
        config = load_config(os.environ)
    except ConfigError as err:
        log.error("Invalid configuration: %s", err)
        return 2
    if config.workers > 1:
        return supervise(config, os.environ)
    try:
        server = create_server(config)
    except OSError as err:
        log.error("Could not listen on %s:%d: %s", config.host, config.port, err)
        return 1
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.info("Received %s; draining", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return: call it from another thread.
        threading.Thread(
            target=drain, args=(server, config.shutdown_grace_seconds), name="drain"
        ).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_exit_if_fatal, args=(server,), name="fatal", daemon=True).start()
    log.info(
        "Serving model %s (%s, accelerator %s) on http://%s:%d",
        config.model_name,
        config.model_path,
        config.accelerator,
        config.host,
        server.port,
    )
    server.serve_forever(poll_interval=0.2)
    for thread in threading.enumerate():
        if thread.name == "drain":
            thread.join()
    if server.model.fatal:
        return terminate("ModelLoadFailed", server.model.fatal, 1)
    log.info("Stopped")
    return 0


def _exit_if_fatal(server: ModelServer) -> None:
    """Once the model has loaded or failed: stop serving when it can never be served."""
    server.model.done.wait()
    if server.model.fatal:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
