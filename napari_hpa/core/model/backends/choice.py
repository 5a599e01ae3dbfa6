"""Which backend runs a model: what ``--backend`` asks for, what is installed, what is fastest.

``auto`` is torch on a GPU (CUDA, MPS: its mixed precision there is the fast path). On
a CPU it is the fastest installed runtime, by measurement: with both installed the
Predictor times them on the model once per machine (:mod:`.fastest`), since machines
rank them differently (docs/benchmarks.md, "CPU runtimes": OpenVINO 2.9 times torch on
a Xeon with AMX, where ONNX Runtime gave 1.7; on two AMD EPYC machines one or the
other was ahead). :func:`auto_cpu_backend` is the guess before that measurement, and
the answer when only one runtime is installed; torch when neither is.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import torch

#: What ``--backend`` and the docks' Backend box offer.
BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino")
#: The backends that run the exported graph on the CPU.
CPU_RUNTIMES = ("onnxruntime", "openvino")


def is_installed(backend: str) -> bool:
    """Tell whether ``backend``'s package can be imported (torch always can)."""
    if backend == "torch":
        return True
    try:  # the export needs onnx as well as the runtime
        return all(importlib.util.find_spec(name) is not None for name in (backend, "onnx"))
    except (ImportError, ValueError):  # a broken or blocked install is not an installed one
        return False


@functools.lru_cache(maxsize=1)
def cpu_is_intel() -> bool:
    """Tell whether the CPU is Intel's, as OpenVINO names it (False if it cannot say)."""
    try:
        import openvino

        name = str(openvino.Core().get_property("CPU", "FULL_DEVICE_NAME"))
    except Exception:  # noqa: BLE001 - any failure only means "not known to be Intel"
        return False
    return "intel" in name.lower()


def auto_cpu_backend() -> str:
    """Return the fastest installed backend on this CPU, by the measured rule above."""
    has_ort, has_ov = is_installed("onnxruntime"), is_installed("openvino")
    if has_ov and (not has_ort or cpu_is_intel()):
        return "openvino"
    return "onnxruntime" if has_ort else "torch"


def resolve_backend(request: str, device: torch.device) -> str:
    """Return the backend to use for ``request`` on ``device``; warn when it cannot be had.

    Raises
    ------
    ValueError
        For a name that is not one of :data:`BACKEND_CHOICES`.
    """
    request = str(request).lower()
    if request not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, not {request!r}")
    if request == "torch":
        return "torch"
    if device.type != "cpu":
        if request != "auto":
            warnings.warn(
                f"the {request} backend runs on the CPU only; using torch on {device.type}",
                RuntimeWarning,
                stacklevel=3,
            )
        return "torch"
    if request == "auto":
        return auto_cpu_backend()
    if not is_installed(request):
        warnings.warn(
            f"the {request} backend is not installed (pip install {request} onnx); using torch",
            RuntimeWarning,
            stacklevel=3,
        )
        return "torch"
    return request
