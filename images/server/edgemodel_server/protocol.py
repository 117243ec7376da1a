"""Open Inference Protocol (KServe v2) codec: JSON tensors and the binary tensor extension.

Pure functions between request bodies and numpy arrays; nothing here touches a socket or
a model. Errors are `ProtocolError` with the HTTP status to answer and a message for the
client.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

HEADER_LENGTH = "Inference-Header-Content-Length"

# Open Inference Protocol datatype <-> numpy dtype (BYTES and BF16 are not supported).
DTYPES: Mapping[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_BY_KIND = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items()}

# onnxruntime's type strings ("tensor(float)") <-> protocol datatypes.
ONNX_TYPES: Mapping[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}

Array = npt.NDArray[Any]


class ProtocolError(Exception):
    """A request the server cannot accept; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: datatype and shape, -1 for a dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, Array]
    outputs: tuple[str, ...]  # empty: every output
    binary_outputs: frozenset[str] = field(default_factory=frozenset)
    binary_by_default: bool = False  # binary_data_output, for outputs not listed


def datatype_of(array: Array) -> str:
    name = _BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if name is None or array.dtype.kind not in "buif":
        raise ProtocolError(f"cannot encode a tensor of numpy dtype {array.dtype}", status=500)
    return name


def spec_from_onnx(name: str, onnx_type: str, shape: Sequence[object]) -> TensorSpec:
    """TensorSpec from onnxruntime NodeArg fields; symbolic or unknown dims become -1."""
    dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
    return TensorSpec(name=name, datatype=ONNX_TYPES.get(onnx_type, onnx_type), shape=dims)


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """Separate the JSON header from the binary tensor data that follows it."""
    if header_length is None:
        size = len(body)
    else:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise ProtocolError(
                f"{HEADER_LENGTH} must be 0..{len(body)} (the body size), got {header_length!r}"
            )
    try:
        header = json.loads(body[:size])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"the request is not valid JSON: {err}") from err
    if not isinstance(header, dict):
        raise ProtocolError("the request must be a JSON object")
    return header, body[size:]


def _shape(raw: object, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise ProtocolError(f"{where}: shape must be a list of non-negative integers")
    return tuple(raw)


def _check_against(spec: TensorSpec, datatype: str, shape: tuple[int, ...], where: str) -> None:
    if datatype != spec.datatype:
        raise ProtocolError(
            f"{where}: datatype {datatype} does not match the model's {spec.datatype}"
        )
    expected = list(spec.shape)
    if len(shape) != len(expected) or any(
        want not in (-1, got) for want, got in zip(expected, shape, strict=True)
    ):
        raise ProtocolError(
            f"{where}: shape {list(shape)} does not match the model's {expected} (-1: any size)"
        )


def _decode_input(
    raw: object, specs: Mapping[str, TensorSpec], binary: memoryview, offset: int
) -> tuple[str, Array, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ProtocolError("each input must be an object with a name")
    name: str = raw["name"]
    where = f"input {name!r}"
    spec = specs.get(name)
    if spec is None:
        raise ProtocolError(f"{where} is not an input of the model (inputs: {', '.join(specs)})")
    shape = _shape(raw.get("shape"), where)
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise ProtocolError(
            f"{where}: datatype must be one of {', '.join(DTYPES)}, got {datatype!r}"
        )
    _check_against(spec, datatype, shape, where)
    dtype = DTYPES[datatype]
    count = math.prod(shape)
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{where}: parameters must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"{where}: binary_data_size must be a non-negative integer")
        if size != count * dtype.itemsize:
            raise ProtocolError(
                f"{where}: binary_data_size {size} does not match shape {list(shape)} of "
                f"{datatype} ({count * dtype.itemsize} bytes)"
            )
        if offset + size > len(binary):
            raise ProtocolError(f"{where}: the body holds fewer bytes than binary_data_size")
        array = np.frombuffer(binary[offset : offset + size], dtype=dtype.newbyteorder("<"))
        return name, array.astype(dtype, copy=False).reshape(shape), offset + size
    if "data" not in raw:
        raise ProtocolError(f"{where}: needs data or parameters.binary_data_size")
    try:
        array = np.asarray(raw["data"], dtype=dtype)
    except (ValueError, TypeError) as err:
        raise ProtocolError(f"{where}: data is not a regular array of {datatype}: {err}") from err
    if array.size != count:
        raise ProtocolError(
            f"{where}: data has {array.size} elements but shape {list(shape)} needs {count}"
        )
    return name, array.reshape(shape), offset


def decode_infer_request(
    header: Mapping[str, Any], binary: bytes, inputs: Sequence[TensorSpec], outputs: Sequence[str]
) -> InferRequest:
    """Validate an inference request against the model and decode its input tensors."""
    specs = {spec.name: spec for spec in inputs}
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("the request needs a non-empty list of inputs")
    view = memoryview(binary)
    offset = 0
    decoded: dict[str, Array] = {}
    for raw in raw_inputs:
        name, array, offset = _decode_input(raw, specs, view, offset)
        if name in decoded:
            raise ProtocolError(f"input {name!r} is given twice")
        decoded[name] = array
    if offset != len(binary):
        raise ProtocolError(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    missing = [name for name in specs if name not in decoded]
    if missing:
        raise ProtocolError(f"missing input(s): {', '.join(missing)}")

    params = header.get("parameters") or {}
    binary_by_default = isinstance(params, dict) and params.get("binary_data_output") is True
    wanted: list[str] = []
    binary_outputs: set[str] = set()
    raw_outputs = header.get("outputs") or []
    if not isinstance(raw_outputs, list):
        raise ProtocolError("outputs must be a list")
    for raw in raw_outputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ProtocolError("each requested output must be an object with a name")
        name = raw["name"]
        if name not in outputs:
            raise ProtocolError(
                f"output {name!r} is not an output of the model (outputs: {', '.join(outputs)})"
            )
        out_params = raw.get("parameters") or {}
        if not isinstance(out_params, dict):
            raise ProtocolError(f"output {name!r}: parameters must be an object")
        if out_params.get("classification"):
            raise ProtocolError("the classification extension is not supported")
        if out_params.get("binary_data", binary_by_default) is True:
            binary_outputs.add(name)
        wanted.append(name)
    request_id = header.get("id")
    return InferRequest(
        id=request_id if isinstance(request_id, str) else None,
        inputs=decoded,
        outputs=tuple(wanted),
        binary_outputs=frozenset(binary_outputs),
        binary_by_default=binary_by_default,
    )


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    results: Mapping[str, Array],
) -> tuple[bytes, int | None]:
    """Body of an inference response and, when it carries binary tensors, its JSON size."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    listed = set(request.outputs)
    for name, array in results.items():
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        as_binary = name in request.binary_outputs if name in listed else request.binary_by_default
        if as_binary:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        outputs.append(tensor)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def decode_infer_response(body: bytes, header_length: str | None) -> dict[str, Array]:
    """Client side of the codec (used by tests and smoke probes): output name -> array."""
    header, binary = split_body(body, header_length)
    arrays: dict[str, Array] = {}
    offset = 0
    for out in header.get("outputs", []):
        dtype = DTYPES[out["datatype"]]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = binary[offset : offset + size]
            offset += size
            array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype)
        else:
            array = np.asarray(out["data"], dtype=dtype)
        arrays[out["name"]] = array.reshape(out["shape"])
    return arrays


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
