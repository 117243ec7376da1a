"""One Open Inference Protocol (KServe v2) client for every check the operator makes of a
model server: the build's smoke test and the rollout's active probe.

`check` asks whether the server is ready, reads the model's metadata, sends one real
inference (a given request, else zeros shaped from the metadata) and checks that every
output has the datatype and shape the metadata declares. It returns what failed, for a
person, or None when the server answered as it should."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

DATATYPES = {"FP32", "FP16", "FP64", "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL"}
# What the server's readiness says while it loads the model; any other 503 is final.
LOADING = "the model is loading"


def zeros_request(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """One inference of zeros (batch 1 for dynamic dimensions); None when an input has a
    datatype no zeros can stand for (e.g. BYTES)."""
    inputs = []
    for spec in metadata.get("inputs", []):
        datatype = str(spec.get("datatype", "FP32"))
        if datatype not in DATATYPES:
            return None
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.get("shape", [])]
        value: Any = False if datatype == "BOOL" else 0
        inputs.append({"name": spec["name"], "shape": shape, "datatype": datatype,
                       "data": [value] * math.prod(shape)})  # fmt: skip
    return {"id": "edgemodel-check", "inputs": inputs}


def _shape_fits(actual: Sequence[int], declared: Sequence[Any]) -> bool:
    if len(actual) != len(declared):
        return False
    pairs = zip(actual, declared, strict=True)
    return all(not isinstance(d, int) or d < 0 or d == a for a, d in pairs)


def output_problems(metadata: Mapping[str, Any], outputs: Sequence[Mapping[str, Any]]) -> list[str]:
    """How the answer differs from what the model declares (names, datatypes, shapes)."""
    declared = {o["name"]: o for o in metadata.get("outputs", [])}
    got = {o.get("name"): o for o in outputs}
    problems = [f"output {name} is missing" for name in declared if name not in got]
    for name, out in got.items():
        want = declared.get(str(name))
        if want is None:
            problems.append(f"output {name} is not declared by the model")
            continue
        if want.get("datatype") and out.get("datatype") != want["datatype"]:
            problems.append(
                f"output {name} has datatype {out.get('datatype')}, declared {want['datatype']}"
            )
        if not _shape_fits(list(out.get("shape") or []), list(want.get("shape") or [])):
            problems.append(
                f"output {name} has shape {out.get('shape')}, declared {want.get('shape')}"
            )
    return problems


def check(
    base_url: str,
    model: str,
    timeout: float,
    request: Mapping[str, Any] | None = None,
    session: requests.Session | None = None,
) -> str | None:
    http = session or requests
    try:
        ready = http.get(f"{base_url}/v2/health/ready", timeout=timeout)
        if ready.status_code != 200:
            return f"/v2/health/ready answered {ready.status_code}: {ready.text[:200]}"
        meta = http.get(f"{base_url}/v2/models/{model}", timeout=timeout)
        if meta.status_code != 200:
            return f"/v2/models/{model} answered {meta.status_code}: {meta.text[:200]}"
        metadata = meta.json()
        body = request if request is not None else zeros_request(metadata)
        if body is None:
            return None  # nothing we can synthesize; readiness and metadata have answered
        infer = http.post(f"{base_url}/v2/models/{model}/infer", json=body, timeout=timeout)
        if infer.status_code != 200:
            return f"an inference answered {infer.status_code}: {infer.text[:200]}"
        outputs = infer.json().get("outputs") or []
        if not outputs:
            return "an inference answered without outputs"
        problems = output_problems(metadata, outputs)
        if problems:
            return "an inference answered wrongly: " + "; ".join(problems[:3])
    except (requests.RequestException, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def metadata(base_url: str, model: str, timeout: float = 10) -> dict[str, Any]:
    answer = requests.get(f"{base_url}/v2/models/{model}", timeout=timeout)
    answer.raise_for_status()
    return dict(answer.json())


@dataclass(frozen=True)
class Served:
    """What one check of a running server saw."""

    execution_provider: str  # the provider the server answered with
    fell_back: bool  # it answered on CPU although its accelerator's provider was wanted
    summary: str


def served_from(meta: Mapping[str, Any]) -> Served:
    """Which provider answered, from the model metadata's parameters."""
    parameters = meta.get("parameters") or {}
    provider = str(parameters.get("execution_provider", "?"))
    fell_back = bool(parameters.get("cpu_fallback", False))
    summary = f"answered one inference on {provider}" + (" (CPU fallback)" if fell_back else "")
    return Served(provider, fell_back, summary)


def wait_ready(
    base_url: str, timeout: float, alive: Callable[[], bool] = lambda: True
) -> str | None:
    """Wait until the server is ready (or says why it never will); None when ready."""
    deadline = time.monotonic() + timeout
    last = "nothing answered"
    while time.monotonic() < deadline:
        if not alive():
            return f"the server exited ({last})"
        try:
            ready = requests.get(f"{base_url}/v2/health/ready", timeout=2)
            if ready.status_code == 200:
                return None
            last = f"/v2/health/ready answered {ready.status_code}: {ready.text[:200]}"
            if LOADING not in ready.text:
                return last
        except requests.RequestException as err:
            last = f"{type(err).__name__}"
        time.sleep(0.25)
    return f"not ready within {timeout:.0f}s ({last})"


def probe(address: str, port: int, model: str, timeout: float) -> str | None:
    """The active probe of one pod: check() against its IP."""
    host = f"[{address}]" if ":" in address else address
    return check(f"http://{host}:{port}", model, timeout)


def probe_many(
    pods: Mapping[str, str], port: int, model: str, timeout: float, workers: int = 8
) -> dict[str, str | None]:
    """probe() each pod (name -> IP) in parallel; name -> what failed, or None."""
    if not pods:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(pods))) as pool:
        futures = {name: pool.submit(probe, ip, port, model, timeout) for name, ip in pods.items()}
        return {name: future.result() for name, future in futures.items()}
