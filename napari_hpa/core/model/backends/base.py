"""What a CPU runtime is to the Predictor: a batch of tiles in, logits and maps out.

A runtime holds one compiled graph per thread count: the Predictor's callers set
torch's thread count (the batch's thread tuner, napari leaving a core to draw), and a
runtime follows it, so there is one knob for threads whatever the backend.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch


class Runtime(ABC):
    """An exported model on a CPU runtime (ONNX Runtime, OpenVINO)."""

    #: The backend's name, as ``--backend`` spells it.
    name: str = ""

    def __init__(self, graph: Path) -> None:
        self.graph = graph
        self._compiled: dict[int, Any] = {}
        self._lock = threading.Lock()

    @abstractmethod
    def _compile(self, threads: int) -> Any:
        """Load the graph for ``threads`` threads."""

    @abstractmethod
    def _infer(self, compiled: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one batch: logits (N, K) and maps (N, K, h, w)."""

    def run(self, batch: np.ndarray, with_cam: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (N, K) of a float32 batch (N, C, H, W), and its maps when asked."""
        threads = max(1, torch.get_num_threads())
        with self._lock:  # a compiled graph's request is not safe to share between threads
            compiled = self._compiled.get(threads)
            if compiled is None:
                compiled = self._compiled[threads] = self._compile(threads)
            logits, cam = self._infer(compiled, np.ascontiguousarray(batch, np.float32))
        return np.asarray(logits, np.float32), (np.asarray(cam, np.float32) if with_cam else None)
