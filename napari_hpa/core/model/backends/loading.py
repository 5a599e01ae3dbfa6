"""Opening a model on a CPU runtime, checked against torch before it answers anything.

Exact by default: a runtime whose probabilities differ from torch float32 by more
than :data:`TOLERANCE` on a probe batch is refused, and the Predictor stays on torch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..checkpoint import LoadedModel
from .base import Runtime
from .export import onnx_path
from .onnx_runtime import OnnxRuntime
from .openvino_runtime import OpenVinoRuntime

#: The largest probability difference from torch float32 a runtime may give (the
#: issue's promise is 1e-3; float32 runtimes give about 1e-6).
TOLERANCE = 1e-4

_RUNTIMES: dict[str, type[Runtime]] = {"onnxruntime": OnnxRuntime, "openvino": OpenVinoRuntime}


class RuntimeMismatch(RuntimeError):
    """A runtime's answers on the probe batch are not torch's."""


def _probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    t = torch.from_numpy(np.asarray(logits, np.float32))
    return (torch.sigmoid(t) if multilabel else torch.softmax(t, dim=1)).numpy()


def open_runtime(model: LoadedModel, backend: str) -> Runtime:
    """Export ``model`` (once, cached) and open it on ``backend``, checked against torch.

    Raises
    ------
    RuntimeMismatch
        When the runtime's probabilities on a probe batch differ from torch's, for a
        fresh export too.
    Exception
        Whatever the export or the runtime raises, when a fresh export fails too; the
        Predictor then warns and uses torch.
    """
    try:
        return _checked(_RUNTIMES[backend](onnx_path(model)), model)
    except Exception:  # noqa: BLE001 - a cached graph that will not load or match: anew
        return _checked(_RUNTIMES[backend](onnx_path(model, fresh=True)), model)


def _checked(runtime: Runtime, model: LoadedModel) -> Runtime:
    """Return ``runtime`` once its probabilities on a probe batch are torch's."""
    spec = model.spec
    probe = np.random.default_rng(0).normal(
        size=(2, len(spec.input.channels), spec.input.size, spec.input.size)
    )
    probe = probe.astype(np.float32)
    net = model.net
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            expected = net(torch.from_numpy(probe).to(device)).float().cpu().numpy()
    finally:
        net.train(was_training)
    got, _ = runtime.run(probe, with_cam=False)
    multilabel = spec.task.multilabel
    got_p, expected_p = _probabilities(got, multilabel), _probabilities(expected, multilabel)
    # A network that overflows gives NaN on torch too: the same NaNs are agreement,
    # and the Predictor reports them as it does for torch.
    same_nan = np.isnan(got_p) & np.isnan(expected_p)
    gap = float(np.where(same_nan, 0.0, np.abs(got_p - expected_p)).max())
    if not gap <= TOLERANCE:
        raise RuntimeMismatch(f"its probabilities differ from torch's by {gap:.2g}")
    return runtime
