"""Before kopf runs: become the leader (when replicas elect one, EDGEMODEL_LEADER_ELECTION)
and wait until the EdgeModel CRD is served, answering the liveness probe meanwhile."""

from __future__ import annotations

import os

import structlog

from edgemodel_operator.adapters import standby
from edgemodel_operator.adapters.leader import LeaseElector
from edgemodel_operator.api.names import GROUP, PLURAL, VERSION
from edgemodel_operator.config import Config

LOG = structlog.get_logger("edgemodel_operator")


def prepare(config: Config) -> LeaseElector | None:
    """Block until this replica may run kopf; the elector (to release at exit), if any."""
    api = standby.api_client()
    timeout = (config.api.connect, config.api.request)
    health = standby.serve_health(config.health_address)
    try:
        elector = None
        if config.leader_lease:
            namespace, name = config.leader_lease.split("/")
            elector = LeaseElector(api, namespace, name, config.leader_lease_seconds, timeout)
            elector.acquire()
            elector.keep(_lost)
        standby.wait_until_served(api, GROUP, VERSION, PLURAL, timeout)
        return elector
    finally:
        health.shutdown()
        health.server_close()


def _lost(why: str) -> None:
    """Another replica may lead by now: stop at once rather than act beside it."""
    LOG.error(f"{why}; exiting so that only one replica acts")
    os._exit(1)
