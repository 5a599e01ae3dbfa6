"""The ONNX Runtime backend: the exported graph on ONNX Runtime's CPU provider."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Runtime
from .export import INPUT, OUTPUTS


class OnnxRuntime(Runtime):
    """The model on ``onnxruntime``'s CPU execution provider, in float32."""

    name = "onnxruntime"

    def _compile(self, threads: int) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # its warnings name graph internals, not the user's
        return onnxruntime.InferenceSession(
            str(self.graph), options, providers=["CPUExecutionProvider"]
        )

    def _infer(self, compiled: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, cam = compiled.run(list(OUTPUTS), {INPUT: batch})
        return logits, cam
