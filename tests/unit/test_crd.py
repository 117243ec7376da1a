"""The EdgeModel CRD without a cluster: every field is described, the printer columns are
in order, and every sample in examples/ fits the schema (a small structural checker; the
API server's CEL rules are covered by the e2e tests)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "edgemodels.edgeai.dev.yaml"
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def version() -> dict[str, Any]:
    (v,) = load_crd()["spec"]["versions"]
    assert isinstance(v, dict)
    return v


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = version()["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property below schema, recursing through properties, items, additionalProperties."""
    for name, sub in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", sub
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def check(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Errors of value against the structural parts of an OpenAPI v3 schema."""
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return [] if ok else [f"{path}: want int or string, got {value!r}"]
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict, "array": list, "string": str, "boolean": bool,
        "integer": int, "number": (int, float),
    }  # fmt: skip
    if kind in types and (
        not isinstance(value, types[kind]) or (kind in ("integer", "number") and value is True)
    ):
        return [f"{path}: want {kind}, got {value!r}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            errors.append(f"{path}: length of {value!r} out of bounds")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        errors.append(f"{path}: {value} out of bounds")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{path}: {len(value)} items out of bounds")
        for i, item in enumerate(value):
            errors += check(item, schema.get("items") or {}, f"{path}[{i}]")
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        errors += [f"{path}.{r}: required" for r in schema.get("required", []) if r not in value]
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                errors += check(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += check(item, extra, f"{path}.{key}")
            elif kind == "object" and props and path != "":
                errors.append(f"{path}.{key}: unknown field")
    return errors


def test_crd_names_and_scope() -> None:
    spec = load_crd()["spec"]
    assert (spec["group"], spec["scope"]) == ("edgeai.dev", "Namespaced")
    assert spec["names"]["kind"] == "EdgeModel"
    assert spec["names"]["shortNames"] == ["em"]
    assert version()["name"] == "v1alpha1" and version()["subresources"] == {"status": {}}


def test_every_property_has_a_description() -> None:
    root = root_schema()
    assert root.get("description")
    nodes = list(walk(root, ""))
    assert len(nodes) > 60
    missing = [path for path, sub in nodes if not str(sub.get("description", "")).strip()]
    assert not missing, f"properties without a description: {missing}"


def test_printer_columns_in_order() -> None:
    columns = version()["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == [
        "Ready",
        "Phase",
        "Version",
        "Targets",
        "Age",
        "Stable",
        "Reason",
        "Services",
        "Endpoints",
        "Updated",
    ]
    assert [c.get("priority", 0) for c in columns] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_checker_catches_mistakes() -> None:
    (sample,) = [yaml.safe_load(p.read_text()) for p in EXAMPLES if p.name == "cpu-replicas.yaml"]
    sample["spec"]["targets"][0].update(accelerator="tpu", replicas=-1)
    sample["spec"]["model"]["uri"] = "ftp://example/model.onnx"
    assert len(check(sample, root_schema(), "")) == 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_fits_the_schema(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "edgeai.dev/v1alpha1" and doc["kind"] == "EdgeModel"
    assert "namespace" not in doc["metadata"]
    assert len(doc["metadata"]["name"]) <= 40
    assert check(doc, root_schema(), "") == []
