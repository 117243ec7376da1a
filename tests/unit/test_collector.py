"""The operator's garbage-collector settings: start-up objects frozen, full collections rare,
the young generations as Python sets them."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from edgemodel_operator import startup


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_settle_collector_freezes_what_is_loaded_and_defers_full_collections(
    restored: None,
) -> None:
    young, middle, _ = gc.get_threshold()
    startup.settle_collector()
    assert gc.get_freeze_count() > 10_000, "modules and their functions are frozen"
    assert gc.get_threshold() == (young, middle, startup.FULL_COLLECTION_AFTER)
