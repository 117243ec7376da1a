"""The handler wiring: every reconcile path registered; the timer keeps kopf's finalizer,
which is what stops it when an EdgeModel is deleted."""

from __future__ import annotations

import kopf

from edgemodel_operator.config import load_config
from edgemodel_operator.handlers.edgemodel import register


def test_handlers_are_registered() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, load_config({"EDGEMODEL_RESYNC_SECONDS": "7"}))
    spawning = registry._spawning.get_all_handlers()
    changing = registry._changing.get_all_handlers()
    assert [h.interval for h in spawning] == [7]  # type: ignore[attr-defined]
    assert len(changing) == 3  # resume, create, update
    assert all(h.requires_finalizer for h in spawning)
    # Nodes; Deployments, DaemonSets, Services; pods; EndpointSlices.
    assert len(registry._indexing.get_all_handlers()) == 6
    with_policies = kopf.OperatorRegistry()
    register(with_policies, load_config({"EDGEMODEL_NETWORK_POLICY": "true"}))
    assert len(with_policies._indexing.get_all_handlers()) == 7  # and NetworkPolicies


def test_a_selector_limits_the_edgemodels_handled() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, load_config({"EDGEMODEL_SELECTOR": "edgeai.dev/shard=a"}))
    handlers = [*registry._spawning.get_all_handlers(), *registry._changing.get_all_handlers()]
    assert all(h.labels == {"edgeai.dev/shard": "a"} for h in handlers)  # type: ignore[attr-defined]
