"""Errors of the optimize package, all subclasses of OptimizeError."""

from __future__ import annotations


class OptimizeError(Exception):
    """A model could not be converted, quantized or checked; the message says why."""
