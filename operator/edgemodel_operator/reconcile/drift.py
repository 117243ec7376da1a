"""Whether a live child differs from what it should be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgemodel_operator.api.names import SPEC_HASH_ANNOTATION
from edgemodel_operator.reconcile.observed import Packed

# Left to the spec hash: the API server rewrites quantities ("0.5" comes back as "500m").
_HASH_ONLY = frozenset({"resources"})


def covers(live: Any, desired: Any) -> bool:
    """True when every value set in desired is present and equal in live (the API server
    adds defaults, which are not drift); empty desired collections match absent ones."""
    if isinstance(live, Packed):
        live = live.decoded()  # once, not per key
    if live is None and desired in ("", False):
        return True  # the API server omits empty optional fields (a toleration's key "")
    if isinstance(desired, Mapping):
        if not desired:
            return live in (None, {}) or isinstance(live, Mapping)
        if not isinstance(live, Mapping):
            return False
        return all(k in _HASH_ONLY or covers(live.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return not desired and not live
        return all(covers(lv, dv) for lv, dv in zip(live, desired, strict=True))
    return bool(live == desired)


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    if live is None:
        return True
    live_hash = (live["metadata"].get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    if live_hash != desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION]:
        return True
    return not (
        covers(live.get("spec"), desired["spec"])
        and covers(live["metadata"].get("labels"), desired["metadata"]["labels"])
    )
