"""The Argo CD health check for EdgeModel, run in a real Lua interpreter (lupa) against
every case of its health_test.yaml, the way Argo CD's own resource-customization tests do."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

lupa = pytest.importorskip("lupa", reason="pip install lupa (a dev dependency)")

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "deploy" / "argocd" / "health" / "edgeai.dev" / "EdgeModel"
CASES = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]

# Argo CD embeds a Lua 5.1 dialect; add the two 5.1 globals a newer Lua lacks.
SHIMS = """
table.getn = table.getn or function(t) return #t end
unpack = unpack or table.unpack
"""


def lua_runtime() -> Any:
    try:
        module = importlib.import_module("lupa.lua52")
    except ImportError:
        module = lupa
    runtime = module.LuaRuntime(unpack_returned_tuples=True)
    runtime.execute(SHIMS)
    return runtime


def to_lua(runtime: Any, value: Any) -> Any:
    """Python data as Lua tables (lists 1-based), like Argo CD hands obj to the script."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def run_check(obj: dict[str, Any]) -> dict[str, str]:
    runtime = lua_runtime()
    script = (CHECK / "health.lua").read_text()
    check = runtime.eval(f"function(obj)\n{script}\nend")
    result = check(to_lua(runtime, obj))
    return {str(k): str(v) for k, v in dict(result).items()}


def test_every_testdata_file_has_a_case() -> None:
    listed = {case["inputPath"] for case in CASES}
    present = {f"testdata/{p.name}" for p in (CHECK / "testdata").glob("*.yaml")}
    assert listed == present


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CHECK / case["inputPath"]).read_text())
    assert run_check(obj) == {
        "status": case["healthStatus"]["status"],
        "message": case["healthStatus"]["message"],
    }


def test_unknown_condition_reason_is_still_degraded() -> None:
    obj = yaml.safe_load((CHECK / "testdata" / "ready.yaml").read_text())
    obj["status"]["conditions"][2].update(status="True", reason="SomethingNew", message="")
    assert run_check(obj) == {
        "status": "Degraded",
        "message": "SomethingNew: The EdgeModel is degraded",
    }


def test_status_without_conditions_is_progressing() -> None:
    obj = {"metadata": {"name": "m", "generation": 1}, "status": {"observedGeneration": 1}}
    assert run_check(obj)["status"] == "Progressing"
