"""Inference backends behind the one Predictor: torch, ONNX Runtime and OpenVINO.

The Predictor keeps torch for GPUs and for training; on a CPU it may hand its forward
passes to a runtime that runs the model's exported ONNX graph (:mod:`.export`) faster.
"""

from .base import Runtime
from .choice import BACKEND_CHOICES, CPU_RUNTIMES, auto_cpu_backend, is_installed, resolve_backend
from .loading import TOLERANCE, RuntimeMismatch, open_runtime

__all__ = [
    "BACKEND_CHOICES",
    "CPU_RUNTIMES",
    "TOLERANCE",
    "Runtime",
    "RuntimeMismatch",
    "auto_cpu_backend",
    "is_installed",
    "open_runtime",
    "resolve_backend",
]
