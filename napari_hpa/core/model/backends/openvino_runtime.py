"""The OpenVINO backend: the exported graph compiled for the CPU, in float32.

OpenVINO's default precision on a CPU with AMX or AVX-512 bf16 is bf16, which moves
logits by up to 0.6: the precision hint is set to f32, so its answers are torch's.

Its threads are not pinned to cores: with pinning, the batch's two one-thread worker
processes both ran on the first core (2 cores: 91 + 91 tiles/s pinned, 185 + 171 not).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Runtime


class OpenVinoRuntime(Runtime):
    """The model compiled by ``openvino`` for the CPU, with the f32 precision hint."""

    name = "openvino"

    def _compile(self, threads: int) -> Any:
        import openvino

        core = openvino.Core()
        compiled = core.compile_model(
            str(self.graph),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "f32",
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": False,
            },
        )
        return compiled, compiled.create_infer_request()

    def _infer(self, compiled: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model, request = compiled
        out = request.infer({0: batch})
        return out[model.output(0)].copy(), out[model.output(1)].copy()
