"""Which device the model runs on, and whether an error means the GPU ran out of memory."""

from __future__ import annotations

import torch


def choose_device(preference: str | torch.device = "auto") -> torch.device:
    """Return the device to use: ``auto`` picks CUDA, then Apple MPS, then the CPU."""
    pref = str(preference).lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            "CUDA was requested but no CUDA GPU is available; use --device cpu or auto"
        )
    if pref == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("MPS was requested but is not available on this machine")
    return torch.device(pref)


def is_oom(exc: BaseException) -> bool:
    """Tell a GPU out-of-memory error (the only one worth a retry on a smaller batch)."""
    found = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", None
    )
    oom_type: type | tuple[()] = found if isinstance(found, type) else ()
    return isinstance(exc, oom_type) or "out of memory" in str(exc).lower()
