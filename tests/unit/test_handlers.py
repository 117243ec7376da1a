"""The handler wiring: every reconcile path registered, and no finalizer on EdgeModels (so
deleting one, or its namespace, never waits for an operator that is not running)."""

from __future__ import annotations

import kopf

from edgemodel_operator.config import load_config
from edgemodel_operator.handlers.edgemodel import register


def test_handlers_are_registered_without_finalizers() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, load_config({"EDGEMODEL_RESYNC_SECONDS": "7"}))
    spawning = registry._spawning.get_all_handlers()
    changing = registry._changing.get_all_handlers()
    assert [h.interval for h in spawning] == [7]  # type: ignore[attr-defined]
    assert len(changing) == 3  # resume, create, update
    assert not any(h.requires_finalizer for h in [*spawning, *changing])
    assert len(registry._indexing.get_all_handlers()) == 4
