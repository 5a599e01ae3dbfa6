"""Helpers shared by the bundled-model recipes (splits, augmentation, timing, reports)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("NAPARI_HPA_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("NAPARI_HPA_CACHE", "/tmp/napari_hpa_bundled"))
MODELS = REPO / "napari_hpa" / "bundled_models"


def setup_torch(threads: int = 2, seed: int = 0) -> None:
    """Few threads (the machine is shared) and fixed seeds."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int = 0, min_per_class: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out): ``fraction`` of each class held out (>= ``min_per_class``)."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = max(min_per_class, int(round(fraction * len(idx))))
        n = min(n, len(idx) - 1)
        held += idx[:n].tolist()
    held_arr = np.array(sorted(held), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), held_arr)
    return train, held_arr


def d4_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random symmetry of the square per batch slice (rotations and flips), on (B, C, H, W)."""
    out = x.clone()
    ks = torch.randint(0, 4, (x.shape[0],), generator=gen)
    flips = torch.randint(0, 2, (x.shape[0],), generator=gen)
    for k in range(4):
        for f in range(2):
            sel = (ks == k) & (flips == f)
            if sel.any():
                v = x[sel]
                if f:
                    v = v.flip(-1)
                out[sel] = torch.rot90(v, k, dims=(-2, -1))
    return out


def scale_shift_batch(
    x: torch.Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.85, 1.15),
    shift: float = 0.06,
    fill: float = 0.0,
) -> torch.Tensor:
    """Random zoom (``scale`` > 1 zooms in) and shift; outside pixels become ``fill``."""
    b = x.shape[0]
    s = torch.empty(b).uniform_(*scale, generator=gen)
    t = torch.empty(b, 2).uniform_(-shift, shift, generator=gen)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = 1.0 / s
    theta[:, 1, 1] = 1.0 / s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def time_schedule(budget_s: float, warmup: float = 0.03) -> Callable[[float], float]:
    """A learning-rate factor of elapsed time: linear warm-up then cosine to 0 at ``budget_s``."""

    def factor(elapsed: float) -> float:
        p = min(1.0, elapsed / max(budget_s, 1e-6))
        if p < warmup:
            return max(p / warmup, 0.05)
        return 0.5 * (1 + math.cos(math.pi * (p - warmup) / (1 - warmup)))

    return factor


def batches(n: int, batch: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch):
        yield order[i : i + batch]


def replace_model_folder(name: str) -> Path:
    """Remove a previous build of a bundled model (versions are immutable, so we rebuild whole)."""
    folder = MODELS / name
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"
