"""KServe's Python model server serving an ONNX model with onnxruntime, for the `serving`
suite's comparison. Runs in KServe's own virtual environment (bench/kserve_env.py), never
in the project's: `python kserve_server.py --model_name digits --model_path m.onnx
--http_port 8080`. The model class is what KServe's docs describe for a custom model:
load() makes the session, predict() answers an Open Inference Protocol request, binary
tensors included (KServe decodes and encodes those itself)."""

from __future__ import annotations

import argparse
from typing import Any

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import from_np_dtype


class OnnxModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: Any = None
        self.load()

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def __getstate__(self) -> dict[str, Any]:
        # With --workers above 1 KServe pickles the model into each worker process: the
        # session cannot be pickled, so every worker makes its own on first use.
        return {**self.__dict__, "session": None}

    def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None
                ) -> InferResponse:  # fmt: skip
        if self.session is None:
            self.load()
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        wanted = payload.request_outputs or []
        names = [o.name for o in wanted] or [o.name for o in self.session.get_outputs()]
        binary = {o.name: bool((o.parameters or {}).get("binary_data")) for o in wanted}
        outputs = []
        for name, value in zip(names, self.session.run(names, feeds), strict=True):
            out = InferOutput(
                name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype)
            )
            out.set_data_from_numpy(value, binary_data=binary.get(name, False))
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            requested_outputs=wanted or None,
        )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = OnnxModel(args.model_name, args.model_path)
    kserve.ModelServer(http_port=args.http_port, workers=args.workers,
                       enable_grpc=False).start([model])  # fmt: skip


if __name__ == "__main__":
    main()
