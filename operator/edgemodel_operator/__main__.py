"""Entry point: `python -m edgemodel_operator` or the `edgemodel-operator` script."""

from __future__ import annotations

import os
import sys

import kopf

from edgemodel_operator import startup, wiring
from edgemodel_operator.config import ConfigError, load_config
from edgemodel_operator.handlers import edgemodel
from edgemodel_operator.logs import configure_logging


def main() -> int:
    try:
        config = load_config(os.environ)  # fail fast, before connecting anywhere
        wiring.check_keys(config)
    except ConfigError as err:
        print(f"edgemodel-operator: invalid configuration: {err}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    registry = kopf.OperatorRegistry()
    edgemodel.register(registry, config)
    elector = startup.prepare(config)  # leads, and the CRD is served
    try:
        kopf.run(
            registry=registry,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=f"http://{config.health_address}/healthz",
            standalone=True,
        )
    finally:
        if elector is not None:
            elector.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
