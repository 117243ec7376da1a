"""The served model: loads the ONNX file into onnxruntime and answers inferences.

`ServedModel.load()` is called once, off the request threads; until it has finished (or
when it failed) `ready_reason` says why the model cannot serve.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from edgemodel_server import providers
from edgemodel_server.config import ServerConfig
from edgemodel_server.metrics import Metrics
from edgemodel_server.protocol import Array, ProtocolError, TensorSpec, spec_from_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    choice: providers.Selected
    load_seconds: float


class ServedModel:
    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._lock = threading.Lock()
        self._loaded: Loaded | None = None
        self._reason = "the model is loading"
        # Set when load() has finished, served or not; `fatal` says why the model can never
        # be served by this process (no file, a model onnxruntime rejects): the entry point
        # exits on it, so that the pod crash-loops instead of idling unready.
        self.done = threading.Event()
        self.fatal: str | None = None
        metrics.set_ready(config.model_name, False)

    @property
    def name(self) -> str:
        return self.config.model_name

    @property
    def version(self) -> str:
        return self.config.model_version

    @property
    def loaded(self) -> Loaded | None:
        return self._loaded

    def ready_reason(self) -> str | None:
        """None when ready to serve, else why not (for readiness and 503 answers)."""
        with self._lock:
            return None if self._loaded is not None else self._reason

    def stop_serving(self, reason: str) -> None:
        with self._lock:
            self._loaded = None
            self._reason = reason
        self.metrics.set_ready(self.name, False)

    def _fail(self, reason: str) -> None:
        log.error("Model %s is not served: %s", self.name, reason)
        self.stop_serving(reason)

    def load(self) -> None:
        try:
            self._load()
        finally:
            self.done.set()

    def _fatal(self, reason: str) -> None:
        self.fatal = reason
        self._fail(reason)

    def _load(self) -> None:
        cfg = self.config
        available = ort.get_available_providers()
        choice = providers.choose(cfg.accelerator, available, cfg.cpu_fallback)
        if isinstance(choice, providers.Unavailable):
            self._fail(choice.reason)
            return
        if not cfg.model_path.is_file():
            self._fatal(f"no model file at {cfg.model_path}")
            return
        started = time.perf_counter()
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = cfg.intra_op_threads  # 0: one per core
            session = ort.InferenceSession(
                str(cfg.model_path),
                options,
                providers=list(choice.providers),
                provider_options=[dict(opts) for opts in choice.options],
            )
        except Exception as err:  # onnxruntime raises several unrelated types
            self._fatal(f"onnxruntime could not load {cfg.model_path}: {err}")
            return
        seconds = time.perf_counter() - started
        confirmed = providers.confirm(choice, session.get_providers(), cfg.cpu_fallback)
        if isinstance(confirmed, providers.Unavailable):
            self._fail(confirmed.reason)
            return
        if confirmed.note:
            log.warning("Model %s: %s", self.name, confirmed.note)
        loaded = Loaded(
            session=session,
            inputs=tuple(spec_from_onnx(a.name, a.type, a.shape) for a in session.get_inputs()),
            outputs=tuple(spec_from_onnx(a.name, a.type, a.shape) for a in session.get_outputs()),
            choice=confirmed,
            load_seconds=seconds,
        )
        with self._lock:
            self._loaded = loaded
        self.metrics.set_model_loaded(self.name, seconds)
        self.metrics.set_provider(
            self.name, cfg.accelerator, confirmed.primary, fell_back=confirmed.fell_back
        )
        self.metrics.set_ready(self.name, True)
        log.info(
            "Loaded model %s version %s in %.3f s on %s",
            self.name,
            self.version,
            seconds,
            confirmed.primary,
        )

    def metadata(self, loaded: Loaded) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "accelerator": self.config.accelerator,
            "precision": self.config.precision,
            "execution_provider": loaded.choice.primary,
            "execution_providers": ",".join(loaded.choice.providers),
            "cpu_fallback": loaded.choice.fell_back,
        }
        if loaded.choice.note:
            parameters["note"] = loaded.choice.note
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.to_json() for spec in loaded.inputs],
            "outputs": [spec.to_json() for spec in loaded.outputs],
            "parameters": parameters,
        }

    @staticmethod
    def run(
        loaded: Loaded, inputs: Mapping[str, Array], outputs: Sequence[str]
    ) -> dict[str, Array]:
        names = list(outputs) or [spec.name for spec in loaded.outputs]
        try:
            results = loaded.session.run(names, dict(inputs))
        except Exception as err:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            raise ProtocolError(f"onnxruntime could not run the model: {err}", 500) from err
        return dict(zip(names, results, strict=True))
