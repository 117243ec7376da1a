"""The revision: a short hash of what the spec asks to run (not of how to roll it out)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from edgemodel_operator.api.spec import EdgeModelSpec


def digest(value: Any, length: int = 10) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def revision(spec: EdgeModelSpec) -> str:
    # The signature gates what runs but does not change it (and revisions of specs written
    # before it existed stay what they were).
    model = {k: v for k, v in asdict(spec.model).items() if k != "signature"}
    return digest({"model": model, "targets": [asdict(t) for t in spec.targets],
                   "serving": asdict(spec.serving)})  # fmt: skip
