"""Load-time sanity checks of a model folder: bounded ``model.json``, no pickles, finite weights.

A model folder may come from anywhere (a colleague, a download), so what it holds is
checked before it is trusted: ``model.json`` is bounded in size and nesting before
it is parsed further, a weights file that is a pickle or a torch archive is refused
(it could run code), and weights holding NaN/Inf or a negative batch-norm variance
are refused (they give NaN probabilities). :mod:`.checkpoint` calls these at load
and at save.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .architectures.base import MAX_PARAMETERS
from .folders import CheckpointError
from .names import printable

#: Bounds on ``model.json`` (a file from anywhere), checked before it is parsed further.
MAX_META_BYTES = 4 * 2**20
MAX_JSON_DEPTH = 32
#: Suffixes of pickled weights, which napari-hpa never loads (named when they are all
#: that a folder holds).
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


def too_deep(data: Any, limit: int) -> bool:
    """Tell whether JSON data nest deeper than ``limit`` (iteratively: no recursion)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in children)
    return False


def read_meta(meta: Path) -> dict[str, Any]:
    """Read ``meta`` (a ``model.json``) as a JSON object, bounded before it is parsed further.

    Raises
    ------
    CheckpointError
        For a missing, oversized, unreadable, non-object or too deeply nested file,
        naming it.
    """
    try:
        if not meta.is_file():
            raise CheckpointError(f"{meta}: no model.json in this folder")
        size = meta.stat().st_size
        if size > MAX_META_BYTES:
            raise CheckpointError(
                f"{meta}: {size:,} bytes is too large for a model.json (at most {MAX_META_BYTES:,})"
            )
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta}: not readable JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{meta}: not readable JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{meta}: expected a JSON object")
    if too_deep(data, MAX_JSON_DEPTH):
        raise CheckpointError(f"{meta}: nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def missing_weights_hint(folder: Path) -> str:
    """Say which pickled weights ``folder`` holds instead of safetensors ('' when none)."""
    try:
        others = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    except OSError:
        others = []
    return f" (found {', '.join(others)}: pickled weights are refused)" if others else ""


def check_not_pickle(weights: Path) -> None:
    """Refuse a weights file that is a pickle or torch archive, or larger than any model.

    Raises
    ------
    CheckpointError
        Naming the file and saying how to convert it (``import-weights``).
    """
    try:
        with weights.open("rb") as fh:
            head = fh.read(8)
        size = weights.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{weights}: cannot read ({exc.strerror or exc})") from None
    # Pickles start with 0x80 (protocol 2+); torch zip archives with "PK".
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"{weights}: this is a pickle/torch archive, not safetensors; napari-hpa never "
            "unpickles model files (they can run code). Convert it with "
            "`napari-hpa import-weights` (weights_only) first."
        )
    if size > 4 * MAX_PARAMETERS + MAX_META_BYTES:
        raise CheckpointError(
            f"{weights}: {size:,} bytes is larger than any model napari-hpa loads"
        )


def weights_problem(state: dict[str, torch.Tensor]) -> str | None:
    """Say what makes a state dict unusable (NaN/Inf weights, a negative variance), or None.

    Either gives NaN probabilities for every image.
    """
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"the weights hold NaN or infinite values ({printable(key, limit=80)})"
        if key.endswith("running_var") and bool((value < 0).any()):
            return f"a batch-norm variance is negative ({printable(key, limit=80)})"
    return None
