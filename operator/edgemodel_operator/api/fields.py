"""Readers of the raw spec's fields, each returning a typed value or raising InvalidSpec
that names the field; and the syntax Kubernetes itself checks in a Pod spec (label keys
and values, tolerations, quantities, resources), checked here before a pod is written."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from edgemodel_operator.api.errors import InvalidSpec

# Label keys and values, and quantities, as Kubernetes validates them in a Pod spec.
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_QUANTITY = re.compile(
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidSpec(f"{where} must be an object")
    return raw


def string(raw: Mapping[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise InvalidSpec(f"{where}.{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{where}.{key} must be a non-empty string")
    return value


def integer(raw: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSpec(f"{where}.{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def number(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(f"{where}.{key} must be a number, got {value!r}")
    return float(value)


def fraction(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidSpec(f"{where}.{key} must be a number between 0 and 1, got {value!r}")
    return float(value)


def node_selector(raw: Any, where: str) -> dict[str, str]:
    """Labels a node must carry: label keys and values, as in a Pod's nodeSelector."""
    selector = mapping(raw, where)
    for key, value in selector.items():
        if not isinstance(key, str) or len(key) > 317 or not _LABEL_KEY.match(key):
            raise InvalidSpec(f"{where}: {key!r} is not a label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise InvalidSpec(f"{where}.{key}: {value!r} is not a label value")
    return {str(k): str(v) for k, v in selector.items()}


def tolerations(raw: Any, where: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(raw, list):
        raise InvalidSpec(f"{where} must be a list")
    for i, t in enumerate(raw):
        at = f"{where}[{i}]"
        t = mapping(t, at)
        key, operator, value = t.get("key", ""), t.get("operator", "Equal"), t.get("value", "")
        if not isinstance(key, str) or (key and (len(key) > 317 or not _LABEL_KEY.match(key))):
            raise InvalidSpec(f"{at}.key {key!r} is not a label key")
        if operator not in TOLERATION_OPERATORS:
            raise InvalidSpec(f"{at}.operator must be Exists or Equal, got {operator!r}")
        if not key and operator != "Exists":
            raise InvalidSpec(f"{at}: a toleration without a key must have operator Exists")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise InvalidSpec(f"{at}.value {value!r} is not a label value")
        if operator == "Exists" and value:
            raise InvalidSpec(f"{at}: a toleration with operator Exists takes no value")
        effect = t.get("effect")
        if effect is not None and effect not in TAINT_EFFECTS:
            raise InvalidSpec(f"{at}.effect must be one of {', '.join(TAINT_EFFECTS)}")
        if "tolerationSeconds" in t and effect != "NoExecute":
            raise InvalidSpec(f"{at}.tolerationSeconds is only for effect NoExecute")
    return tuple(dict(t) for t in raw)


_SUFFIX = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
           "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
           "P": Decimal("1e15"), "E": Decimal("1e18"), "Ki": Decimal(2**10),
           "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
           "Pi": Decimal(2**50), "Ei": Decimal(2**60)}  # fmt: skip


def quantity(amount: int | str) -> Decimal:
    """A Kubernetes quantity's value ("500m" is 0.5, "1Ki" 1024); ValueError if it is none."""
    if isinstance(amount, int):
        return Decimal(amount)
    match = re.match(r"^\+?([0-9]*\.?[0-9]*)(([KMGTPE]i)|[numkMGTPE]|[eE][-+]?[0-9]+)?$", amount)
    if not match or not _QUANTITY.match(amount):
        raise ValueError(amount)
    value, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _SUFFIX:
        return value * _SUFFIX[suffix]
    return value.scaleb(int(suffix[1:]))  # 1e3, 2E-3


def resources(raw: Any, where: str) -> dict[str, Any]:
    given = dict(mapping(raw, where))
    amounts: dict[str, dict[str, Decimal]] = {}
    for part in ("requests", "limits"):
        for name, amount in mapping(given.get(part), f"{where}.{part}").items():
            ok = (isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0) or (
                isinstance(amount, str) and len(amount) <= 32 and _QUANTITY.match(amount)
            )
            if not ok:
                raise InvalidSpec(
                    f"{where}.{part}.{name} must be a quantity of 0 or more, such as 500m, "
                    f"1 or 512Mi, got {amount!r}"
                )
            device = "/" in name and not name.startswith("hugepages-")
            if device and not re.match(r"^\+?[0-9]+$", str(amount)):
                raise InvalidSpec(f"{where}.{part}.{name}: a device takes a whole number")
            amounts.setdefault(part, {})[name] = quantity(amount)
    for name, request in amounts.get("requests", {}).items():
        limit = amounts.get("limits", {}).get(name)
        if limit is not None and request > limit:
            raise InvalidSpec(f"{where}.requests.{name} may not exceed its limit")
    return given
