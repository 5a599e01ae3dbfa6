"""The training input pipeline: cached images -> random crops -> augmentation -> tensors.

Microscopy fields have no preferred orientation, so the eight symmetries of the
square (D4: 90-degree rotations and flips) are free extra data. Intensity jitter
teaches the network not to rely on exact brightness, which varies between
microscopes and staining batches; channel dropout teaches it to cope with an
optional channel (e.g. HPA's ER stain) that some images do not have.

Every function takes an explicit ``numpy.random.Generator`` so that a sample's
augmentation depends only on its seed, not on which DataLoader worker draws it.

Consistency with prediction: images go through the same steps as
:func:`napari_hpa.core.model.tiles.prepare_tiles` (channels, invert, pad,
normalise, resize, mean/std); with ``crop_scale=(1, 1)`` and no augmentation a
training tensor equals the prediction tile exactly (a test checks this).
"""

from __future__ import annotations

import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..image.channels import adapt_channels
from ..image.io import ImageReadError, read_image
from ..model.checkpoint import InputSpec
from ..model.tiles import pad_to_square, percentile_normalize, prepare_tiles, resize
from .cells import CellViews, split_cell_key

if TYPE_CHECKING:
    from .data import Sample

Progress = Callable[[dict[str, Any]], None]


@dataclass
class AugmentConfig:
    """What random changes a training crop gets.

    Parameters
    ----------
    d4
        Random rotation by a multiple of 90 degrees and random flip.
    strength
        Scales the intensity jitter (0 = none, 1 = gain +-20 %, offset +-0.05,
        gamma 0.8-1.25); the hyperparameter search tunes it.
    crop_scale
        Range of the crop side as a fraction of the view the model sees at
        prediction time (the whole image, or one tile when ``fit`` is set).
        ``(1, 1)`` reproduces prediction exactly; ``(0.5, 1)`` zooms in up to 2x.
    channel_dropout
        Channel name -> probability of blanking it, as if the image lacked it.
    """

    d4: bool = True
    strength: float = 1.0
    crop_scale: tuple[float, float] = (1.0, 1.0)
    channel_dropout: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.crop_scale)
        if not 0 < lo <= hi <= 2:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 2, got {self.crop_scale}")
        self.crop_scale = (lo, hi)
        if self.strength < 0:
            raise ValueError("augmentation strength must be >= 0")
        for name, p in self.channel_dropout.items():
            if not 0 <= p <= 1:
                raise ValueError(f"channel dropout probability for {name!r} must be in [0, 1]")


def d4_transform(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate (C, H, W) by ``k`` quarter turns, then mirror left-right if ``flip``."""
    out = np.rot90(x, k, axes=(1, 2))
    if flip:
        out = out[:, :, ::-1]
    return out


def random_d4(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the eight D4 symmetries, uniformly."""
    return np.ascontiguousarray(d4_transform(x, int(rng.integers(4)), bool(rng.integers(2))))


def intensity_jitter(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Per-channel random gain, offset and gamma, clipped to [0, 1].

    Applied in the normalised [0, 1] space, before mean/std, so that a blank
    (all-zero) channel stays blank: a missing stain must not turn into signal.
    """
    if strength <= 0:
        return x
    c: int = x.shape[0]
    gain = 1.0 + rng.uniform(-0.2, 0.2, c) * strength
    offset = rng.uniform(-0.05, 0.05, c) * strength
    gamma = np.exp(rng.uniform(-0.22, 0.22, c) * strength)
    out = np.clip(x, 0.0, 1.0, dtype=np.float32)
    for i in range(c):  # in place, per channel: a third less time than whole-array temporaries
        np.power(out[i], np.float32(gamma[i]), out=out[i])
        out[i] *= np.float32(gain[i])
        out[i] += np.float32(offset[i])
    blank = ~np.any(x > 0, axis=(1, 2))
    out[blank] = x[blank]
    return np.clip(out, 0.0, 1.0, out=out)


def channel_dropout(
    x: np.ndarray,
    rng: np.random.Generator,
    channel_names: Sequence[str],
    probabilities: dict[str, float],
    fill: float = 0.0,
) -> np.ndarray:
    """Blank each named channel with its probability (``fill`` = what a missing one looks like)."""
    if not probabilities:
        return x
    lowered = [c.lower() for c in channel_names]
    out = x
    for name, p in probabilities.items():
        if name.lower() in lowered and rng.random() < p:
            if out is x:
                out = x.copy()
            out[lowered.index(name.lower())] = fill
    return out


def random_crop(
    x: np.ndarray,
    rng: np.random.Generator,
    side: tuple[float, float],
    out_size: int,
) -> np.ndarray:
    """Crop ``side`` (h, w) pixels at random (clipped to the image), resized to ``out_size``.

    Fractional sides and positions are rounded; a crop already of ``out_size``
    is returned without resampling so that scale-1 crops match prediction exactly.
    """
    _, h, w = x.shape
    ch = max(1, min(h, round(side[0])))
    cw = max(1, min(w, round(side[1])))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    crop = x[:, y0 : y0 + ch, x0 : x0 + cw]
    if crop.shape[1:] != (out_size, out_size):
        crop = resize(np.ascontiguousarray(crop), (out_size, out_size))
    return crop


# ----------------------------------------------------------------------------- views
def inference_frame(h: int, w: int, spec: InputSpec) -> tuple[int, int]:
    """(H, W) the prepared image has at prediction time, before it is cut into tiles."""
    if spec.fit is None:
        return spec.size, spec.size
    scale = spec.fit / max(h, w)
    return max(spec.size, round(h * scale)), max(spec.size, round(w * scale))


def missing_channel_fill(spec: InputSpec) -> float:
    """Return the value a missing (zero) channel has after normalisation, before mean/std."""
    return 1.0 if spec.invert and spec.normalize == "none" else 0.0


def base_view(
    data: np.ndarray, channel_names: Sequence[str], spec: InputSpec, min_crop: float = 1.0
) -> tuple[np.ndarray, float]:
    """Prepare the image as prediction does, at ``zoom`` times the prediction resolution.

    ``zoom`` > 1 (up to the image's own resolution) keeps detail for crops
    smaller than the prediction view; at ``min_crop >= 1`` the view is exactly
    prediction's resized image. Returns ``(view (C, h, w), zoom)``.
    """
    x = adapt_channels(data, channel_names, spec.channels, spec.optional_channels)
    if spec.invert:
        x = 1.0 - x
    if spec.pad_square:
        x, _ = pad_to_square(x)
    if spec.normalize == "percentile":
        x = percentile_normalize(x)
    h, w = x.shape[1:]
    frame = inference_frame(h, w, spec)
    zoom = 1.0
    if min_crop < 1:
        zoom = max(1.0, min(1.0 / min_crop, h / frame[0], w / frame[1]))
    shape = (max(1, round(frame[0] * zoom)), max(1, round(frame[1] * zoom)))
    return resize(x, shape), zoom


class ImageCache:
    """Decoded, normalised views in RAM by source; least recently used dropped beyond ``max_bytes``.

    Decoding and normalising a large image costs far more than a training step
    on a small crop of it, so each image is prepared once. With DataLoader
    workers (fork), what was preloaded in the main process is shared copy-on-write.
    """

    def __init__(self, load: Callable[[str], tuple[np.ndarray, float]], max_bytes: int) -> None:
        self.load = load
        self.max_bytes = int(max_bytes)
        self._store: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, source: str) -> bool:
        return source in self._store

    def get(self, source: str) -> tuple[np.ndarray, float]:
        """Return ``source``'s view, loading (and caching) it on a miss."""
        if source in self._store:
            self._store.move_to_end(source)
            return self._store[source]
        item = self.load(source)
        self.put(source, item)
        return item

    def put(self, source: str, item: tuple[np.ndarray, float]) -> bool:
        """Store unless it cannot fit at all; evict the oldest entries to make room."""
        size = item[0].nbytes
        if size > self.max_bytes:
            return False
        if source in self._store:
            self.nbytes -= self._store.pop(source)[0].nbytes
        while self._store and self.nbytes + size > self.max_bytes:
            _, old = self._store.popitem(last=False)
            self.nbytes -= old[0].nbytes
        self._store[source] = item
        self.nbytes += size
        return True

    def full(self) -> bool:
        """Tell whether the cache holds ``max_bytes``: preloading stops there."""
        return self.nbytes >= self.max_bytes


class TrainDataset(Dataset):
    """Random training crops; item ``key`` = ``epoch * len + index`` seeds its randomness.

    Each image appears ``crops_per_image`` times per epoch (image-level labels,
    many random crops). Returns ``(x (C, size, size) float32, y (K,) float32)``.
    """

    def __init__(
        self,
        sources: Sequence[str],
        targets: np.ndarray,
        cache: ImageCache,
        spec: InputSpec,
        aug: AugmentConfig,
        crops_per_image: int = 1,
        seed: int = 0,
        train: bool = True,
    ) -> None:
        self.sources = list(sources)
        self.targets = np.asarray(targets, np.float32)
        self.cache = cache
        self.spec = spec
        self.aug = aug
        self.crops = max(1, int(crops_per_image))
        self.seed = int(seed)
        self.train = train
        self.mean = np.asarray(spec.mean, np.float32)[:, None, None]
        self.std = np.asarray(spec.std, np.float32)[:, None, None]
        self.fill = missing_channel_fill(spec)

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Use this per-channel ``mean``/``std`` instead of the spec's."""
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.targets) * self.crops

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.targets)
        index = int(key) % len(self)
        image = index % n
        rng = np.random.default_rng([self.seed, int(key)])
        view, zoom = self.cache.get(self.sources[image])
        size = self.spec.size
        lo, hi = self.aug.crop_scale if self.train else (1.0, 1.0)
        side = rng.uniform(lo, hi) * size * zoom
        x = random_crop(view, rng, (side, side), size)
        if self.train:
            if self.aug.d4:
                x = random_d4(x, rng)
            x = intensity_jitter(x, rng, self.aug.strength)
            x = channel_dropout(x, rng, self.spec.channels, self.aug.channel_dropout, self.fill)
        x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(
            self.targets[image]
        )


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, yielding keys ``epoch * n + i``.

    The key carries the epoch into persistent workers, so augmentation differs
    per epoch yet is reproducible whatever the number of workers.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: a new permutation and new keys (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        perm = np.random.default_rng([self.seed, 7919, self.epoch]).permutation(self.n)
        return iter((perm + self.epoch * self.n).tolist())


def _worker_init(_: int) -> None:
    # The main process handles Ctrl-C and SIGTERM (stop after this batch, keep the best
    # epoch) and shuts the workers down itself; a worker dying on a signal sent to the
    # whole process group would turn that clean stop into a DataLoader error.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


def make_loader(
    dataset: TrainDataset, batch_size: int, workers: int = 0, pin_memory: bool = False
) -> tuple[DataLoader, EpochSampler]:
    """Make a DataLoader over random batches; call ``sampler.set_epoch(e)`` before each epoch."""
    sampler = EpochSampler(len(dataset), dataset.seed)
    kwargs: dict = {}
    if workers > 0:
        kwargs = {"persistent_workers": True, "worker_init_fn": _worker_init, "prefetch_factor": 4}
        if os.name == "posix" and "fork" in torch.multiprocessing.get_all_start_methods():
            kwargs["multiprocessing_context"] = "fork"
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=len(dataset) >= 2 * batch_size,
        **kwargs,
    )
    return loader, sampler


def channel_stats(views: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over views (std 1 for a constant channel, e.g. a missing one)."""
    if not views:
        raise ValueError("no images to compute channel statistics from")
    c = views[0].shape[0]
    total = np.zeros(c)
    sq = np.zeros(c)
    count = 0
    for v in views:
        flat = v.reshape(c, -1).astype(np.float64)
        total += flat.sum(1)
        sq += (flat**2).sum(1)
        count += flat.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 0))
    std = np.where(std < 1e-3, 1.0, std)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


# ----------------------------------------------------------------------------- loading
def preload(
    samples: list[Sample], cache: ImageCache, progress: Progress, stop: Callable[[], None]
) -> list[Sample]:
    """Load training views into the cache while it has room; drop unreadable images."""
    good: list[Sample] = []
    last = 0.0
    for i, s in enumerate(samples):
        stop()
        if s.source not in cache and not cache.full():
            try:
                cache.get(s.source)
            except (ImageReadError, ValueError) as exc:
                progress({"event": "warning", "message": f"skipping {s.source}: {exc}"})
                continue
        good.append(s)
        if time.monotonic() - last > 1.0:
            last = time.monotonic()
            progress({"event": "loading", "done": i + 1, "total": len(samples)})
    return good


def make_cache(
    spec: InputSpec, min_crop: float, max_bytes: int, mask_db: str | None = None
) -> ImageCache:
    """Make a view cache for ``spec``; share one across runs only while ``spec`` stays the same.

    ``mask_db`` (:attr:`TrainData.mask_db`) cuts the cell samples' tiles (:mod:`.cells`).
    """
    cells = CellViews(mask_db) if mask_db else None

    def load(source: str) -> tuple[np.ndarray, float]:
        if cells is not None and split_cell_key(source) is not None:
            return cells.view(source, spec), 1.0  # the whole tile: no room to crop in
        image = read_image(source)
        return base_view(image.data, image.channel_names, spec, min_crop)

    return ImageCache(load, max_bytes)


def validation_tiles(
    samples: list[Sample],
    spec: InputSpec,
    progress: Progress,
    stop: Callable[[], None],
    mask_db: str | None = None,
) -> tuple[list[np.ndarray], list[int]]:
    """Prediction tiles of the validation images and cells, as the Predictor makes them."""
    tiles, bad = [], []
    cells = CellViews(mask_db) if mask_db else None
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    for i, s in enumerate(samples):
        stop()
        try:
            if cells is not None and split_cell_key(s.source) is not None:
                tiles.append(((cells.view(s.source, spec) - mean) / std)[None])
                continue
            image = read_image(s.source)
            tiles.append(prepare_tiles(image.data, image.channel_names, spec)[0])
        except (ImageReadError, ValueError) as exc:
            bad.append(i)
            progress({"event": "warning", "message": f"skipping {s.source}: {exc}"})
    return tiles, bad
