"""A small Open Inference Protocol (KServe v2) HTTP server for one ONNX model."""

from __future__ import annotations

__version__ = "0.1.0"
SERVER_NAME = "edgemodel-server"
