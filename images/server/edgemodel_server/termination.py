"""The termination message: what a failed container tells `kubectl describe pod` and the
operator (Kubernetes reads /dev/termination-log when the container ends)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("edgemodel_server")

TERMINATION_LOG = "/dev/termination-log"


def terminate(reason: str, message: str, code: int) -> int:
    """Log `reason: message`, leave it as the termination message, return `code`."""
    text = f"{reason}: {message}"
    log.error("%s", text)
    with contextlib.suppress(OSError):  # not in a pod: the log line is all there is
        Path(os.environ.get("EDGEMODEL_TERMINATION_LOG", TERMINATION_LOG)).write_text(text)
    return code
