"""Which CPU runtime is fastest for a model on this machine: timed once, then remembered.

With both ONNX Runtime and OpenVINO installed, ``--backend auto`` on a CPU opens both
(each checked against torch), times them side by side on the model's own tile batch
and keeps the faster. No fixed rule is right everywhere: two AMD EPYC machines of this
project ranked the two in opposite orders (docs/benchmarks.md, "CPU runtimes"). The
answer is remembered in the cache folder, per model weights, CPU and thread count, so
later runs open one runtime only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
from collections.abc import Sequence

import numpy as np
import torch

from ...atomic import atomic_path
from ..checkpoint import LoadedModel
from .base import Runtime
from .export import cache_dir, weights_key
from .loading import open_runtime

#: The file, in :func:`~.export.cache_dir`, that remembers the measured winners.
RECORD = "fastest.json"
#: Interleaved timed runs of each runtime; the best of each is compared.
ROUNDS = 5


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """Return the CPU's model name as OpenVINO reads it, else what Python knows.

    Timing happens only with OpenVINO installed, so its name is there when it matters;
    it reads the name on every operating system.
    """
    with contextlib.suppress(Exception):
        import openvino

        name = str(openvino.Core().get_property("CPU", "FULL_DEVICE_NAME")).strip()
        if name:
            return name
    return platform.processor() or platform.machine() or "unknown"


def _key(model: LoadedModel, threads: int) -> str:
    return f"{weights_key(model)}|{cpu_name()}|{threads} thread(s)"


def _read_record() -> dict[str, str]:
    try:
        found = json.loads((cache_dir() / RECORD).read_text())
    except (OSError, ValueError):  # none yet, or damaged: measure again
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def recorded_fastest(model: LoadedModel, threads: int) -> str | None:
    """Return the runtime measured fastest for ``model`` here at ``threads``, if any."""
    return _read_record().get(_key(model, threads))


def remember_fastest(model: LoadedModel, threads: int, backend: str) -> None:
    """Record ``backend`` as the fastest (atomically; a cache that cannot be written is skipped)."""
    record = _read_record()
    record[_key(model, threads)] = backend
    with contextlib.suppress(OSError):
        target = cache_dir() / RECORD
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))


def time_runtimes(runtimes: dict[str, Runtime], batch: np.ndarray) -> dict[str, float]:
    """Return each runtime's best seconds for one run of ``batch``, timed interleaved."""
    for runtime in runtimes.values():
        runtime.run(batch, with_cam=False)  # warm-up: the first run allocates
    best = dict.fromkeys(runtimes, float("inf"))
    for _ in range(ROUNDS):
        for name, runtime in runtimes.items():
            start = time.perf_counter()
            runtime.run(batch, with_cam=False)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def open_fastest(model: LoadedModel, candidates: Sequence[str], batch_size: int) -> Runtime:
    """Open the fastest of ``candidates`` for ``model``: remembered, else timed now.

    Raises
    ------
    Exception
        What opening the first candidate raised, when none of them opens.
    """
    threads = max(1, torch.get_num_threads())
    known = recorded_fastest(model, threads)
    if known is not None and known in candidates:
        with contextlib.suppress(Exception):  # it no longer opens: measure the others
            return open_runtime(model, known)
    opened: dict[str, Runtime] = {}
    failures: list[Exception] = []
    for name in candidates:
        try:
            opened[name] = open_runtime(model, name)
        except Exception as exc:  # noqa: BLE001 - another candidate may still open
            failures.append(exc)
    if not opened:
        raise failures[0]
    winner = next(iter(opened))
    if len(opened) > 1:
        spec = model.spec.input
        shape = (max(1, batch_size), len(spec.channels), spec.size, spec.size)
        batch = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        seconds = time_runtimes(opened, batch)
        winner = min(seconds, key=seconds.__getitem__)
    remember_fastest(model, threads, winner)
    return opened[winner]
