"""Which precision training computes in: bf16 autocast where it is faster on this CPU, else fp32.

The weights, the optimizer, the loss and every metric stay float32 (autocast only
runs the network's convolutions and matrix products in bfloat16), so a bf16 run
keeps fp32 master weights and saves a float32 model. On a GPU the existing CUDA
float16 autocast (``TrainConfig.amp``) applies instead.

``auto`` needs native bf16 (AVX-512 BF16 or AMX) and then times one training step
of the run's own network both ways (:func:`bf16_speedup`), because native support
does not make every network faster: on an AMD EPYC with AVX-512 BF16 a small CNN
trained 2.1 times faster in bf16 and EfficientNet-Lite0 (depthwise convolutions)
0.9 times as fast (docs/benchmarks.md, "bf16 training on the CPU").
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Literal

import torch
from torch import nn

#: What ``--precision`` accepts.
PRECISIONS = ("auto", "fp32", "bf16")
#: ``auto`` trains in bf16 only when a timed step is at least this much faster.
MIN_SPEEDUP = 1.15
Precision = Literal["fp32", "bf16"]


def cpu_has_native_bf16() -> bool:
    """Tell whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX).

    Without it torch emulates bf16, which is slower than fp32. torch's probes are
    private functions: any failure to ask means "no", and training runs in fp32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and bool(probe()):
                return True
        except Exception:  # noqa: BLE001 - a probe that fails says nothing
            continue
    return False


def resolve_precision(request: str, device: torch.device) -> Precision:
    """Return the precision to train in for ``request`` on ``device``.

    ``auto`` is bf16 on a CPU with native bf16, else fp32. ``bf16`` asked for on a
    CPU without it, or on a GPU (whose float16 autocast is ``amp``), warns and
    trains in fp32.

    Raises
    ------
    ValueError
        For a request that is not one of :data:`PRECISIONS`.
    """
    request = str(request).lower()
    if request not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {request!r}")
    if request == "fp32":
        return "fp32"
    if device.type != "cpu":
        if request == "bf16":
            warnings.warn(
                f"bf16 training is for the CPU; on {device.type} the float16 autocast "
                "(--amp) applies; training in fp32 otherwise",
                RuntimeWarning,
                stacklevel=2,
            )
        return "fp32"
    if cpu_has_native_bf16():
        return "bf16"
    if request == "bf16":
        warnings.warn(
            "this CPU has no native bf16 (AVX-512 BF16 or AMX), where bf16 is slower "
            "than fp32: training in fp32",
            RuntimeWarning,
            stacklevel=2,
        )
    return "fp32"


def bf16_speedup(net: nn.Module, shape: tuple[int, int, int, int], rounds: int = 2) -> float:
    """Return how many times faster a forward and backward pass of ``net`` runs in bf16.

    Timed on a copy (the run's weights and batch-norm statistics stay untouched), on
    random input of ``shape`` in channels-last, interleaved, best of ``rounds``.
    """
    probe = copy.deepcopy(net).cpu().train()
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = probe(x)
        out.float().square().mean().backward()
        probe.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(False), step(True)  # warm-up: the first pass of each allocates and picks kernels
    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], step(bf16))
    return best[False] / best[True]
