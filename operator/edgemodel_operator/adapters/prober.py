"""The active health probe: ask a new pod's model server whether it is ready, then send it
one real inference (zeros shaped from its own model metadata), over the Open Inference
Protocol. Returns what failed, for a person, or None when the pod answered."""

from __future__ import annotations

from typing import Any

import requests

DATATYPES = {"FP32", "FP16", "FP64", "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL"}


def _zeros(meta: dict[str, Any]) -> dict[str, Any]:
    inputs = []
    for spec in meta.get("inputs", []):
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.get("shape", [])]
        count = 1
        for d in shape:
            count *= d
        datatype = spec.get("datatype", "FP32")
        value: Any = False if datatype == "BOOL" else 0
        inputs.append({"name": spec["name"], "shape": shape, "datatype": datatype,
                       "data": [value] * count})  # fmt: skip
    return {"inputs": inputs}


def probe(address: str, port: int, model: str, timeout: float) -> str | None:
    base = f"http://{address}:{port}"
    try:
        ready = requests.get(f"{base}/v2/health/ready", timeout=timeout)
        if ready.status_code != 200:
            return f"/v2/health/ready answered {ready.status_code}: {ready.text[:200]}"
        meta = requests.get(f"{base}/v2/models/{model}", timeout=timeout)
        if meta.status_code != 200:
            return f"/v2/models/{model} answered {meta.status_code}: {meta.text[:200]}"
        body = _zeros(meta.json())
        if any(i["datatype"] not in DATATYPES for i in body["inputs"]):
            return None  # nothing we can synthesize; readiness has answered
        infer = requests.post(f"{base}/v2/models/{model}/infer", json=body, timeout=timeout)
        if infer.status_code != 200 or not infer.json().get("outputs"):
            return f"an inference answered {infer.status_code}: {infer.text[:200]}"
    except (requests.RequestException, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None
