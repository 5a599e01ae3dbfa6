"""Run a model on images: the one inference path for GUI, CLI, batch and evaluation.

The :class:`Predictor` chooses the device (:mod:`.device`) and the backend that runs
the network (:mod:`.backends`: torch, or on a CPU the exported graph on ONNX Runtime or
OpenVINO), batches tiles across images, averages each tile's test-time views
(:mod:`.views`, ``input.views``), uses mixed precision on CUDA, and survives running out
of GPU memory by halving the batch and finally falling back to the CPU.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..image.io import ImageData
from .backends import CPU_RUNTIMES, Runtime, is_installed, open_runtime, resolve_backend
from .backends.fastest import open_fastest
from .checkpoint import LoadedModel, ModelSpec, load_model
from .device import choose_device, is_oom
from .heat import Activations, mask_map, place_whole_map
from .prediction import NonFiniteOutput, Prediction, decide, is_finite
from .registry import ModelEntry, resolve_model
from .tiles import TileGrid, prepare_cell, prepare_tiles, stitch_maps
from .views import with_views

CamRequest = Sequence[int] | Literal["predicted", "all"] | None

#: The activation maps come from one pass of the network over the whole resized image
#: when it has at most this many pixels (the bundled HPA models: 320 x 320); a larger one
#: is mapped tile by tile, with half-shifted tiles over the borders.
WHOLE_PASS_PIXELS = 1024 * 1024


class PredictionCancelled(Exception):
    """Raised inside :meth:`Predictor.predict` when ``should_stop`` returns True."""


class Predictor:
    """A loaded model on a device, ready to classify images.

    Parameters
    ----------
    model
        A name, ``name@version``, a model folder, a registry entry, a loaded
        model, or None for the default (bundled HPA) model.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    batch_size
        Tiles per forward pass; halved automatically on GPU out-of-memory.
    amp
        Mixed precision (float16 autocast) on CUDA.
    backend
        ``"torch"`` (the default: training and comparisons change or compare weights),
        ``"onnxruntime"``, ``"openvino"`` or ``"auto"`` (the fastest installed on a CPU,
        timed once per model and machine by :mod:`.backends.fastest`; torch on a GPU).
        A runtime that fails to load, run or match torch falls back to torch with one
        warning.
    """

    def __init__(
        self,
        model: str | Path | ModelEntry | LoadedModel | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 8,
        amp: bool = True,
        backend: str = "torch",
    ) -> None:
        if isinstance(model, LoadedModel):
            loaded = model
        else:
            entry = model if isinstance(model, ModelEntry) else resolve_model(model)
            loaded = load_model(entry.path)
        self.model = loaded
        self.device = choose_device(device)
        self.batch_size = max(1, int(batch_size))
        self.amp = amp
        self.model.net.to(self.device).eval()
        #: The backend in use: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
        self.backend = resolve_backend(backend, self.device)
        # auto on a CPU with both runtimes: the faster is timed when the backend opens
        auto_on_cpu = str(backend).lower() == "auto" and self.backend != "torch"
        self._auto_candidates = [n for n in CPU_RUNTIMES if auto_on_cpu and is_installed(n)]
        self._runtime: Runtime | None = None

    def ensure_backend(self) -> str:
        """Open the backend now (exporting the model on its first use); return its name.

        Otherwise the first forward pass opens it. Batch calls it before its workers
        start, so that they load one cached export instead of each exporting.
        """
        if self.backend != "torch" and self._runtime is None:
            try:
                if len(self._auto_candidates) > 1:
                    self._runtime = open_fastest(self.model, self._auto_candidates, self.batch_size)
                    self.backend = self._runtime.name
                else:
                    self._runtime = open_runtime(self.model, self.backend)
            except Exception as exc:  # noqa: BLE001 - any failure: torch still answers
                self._fall_back_to_torch(exc)
        return self.backend

    def _fall_back_to_torch(self, reason: BaseException) -> None:
        first_line = (str(reason).strip().splitlines() or [type(reason).__name__])[0]
        warnings.warn(
            f"the {self.backend} backend failed for {self.model_id} ({first_line[:200]}); "
            "using torch",
            RuntimeWarning,
            stacklevel=3,
        )
        self.backend = "torch"
        self._runtime = None

    @property
    def spec(self) -> ModelSpec:
        """The loaded model's spec."""
        return self.model.spec

    @property
    def model_id(self) -> str:
        """``name@version`` of the loaded model: the id in result tables and labels."""
        return self.model.spec.id

    def prepare(
        self, image: ImageData, whole: bool = False, seamless: bool = False
    ) -> tuple[np.ndarray, TileGrid]:
        """Input tiles for one image (CPU only, so it can run in worker processes).

        ``seamless`` adds the half-shifted tiles that only the activation maps use
        (:func:`~.tiles.prepare_tiles`).
        """
        return prepare_tiles(
            image.data, image.channel_names, self.spec.input, whole=whole, seamless=seamless
        )

    # -- the forward pass, with the GPU out-of-memory fallback -------------------------

    def _forward(self, batch: np.ndarray, with_cam: bool) -> tuple[np.ndarray, np.ndarray | None]:
        size = self.spec.input.size
        if (
            self.backend != "torch"
            and self.device.type == "cpu"
            and batch.shape[-2:] == (size, size)
        ):
            # tiles only: the exported graph is the tile size's (its "same" padding is
            # fixed at export), so a whole-image map pass stays on torch
            self.ensure_backend()
            if self._runtime is not None:
                try:
                    return self._runtime.run(batch, with_cam)
                except Exception as exc:  # noqa: BLE001 - fall back, and answer with torch
                    self._fall_back_to_torch(exc)
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        use_amp = self.amp and self.device.type == "cuda"
        self.model.net.eval()  # a caller (validation in training) may have left train mode on
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            if with_cam:
                logits, cam = self.model.net.forward_with_cam(x)
                return logits.float().cpu().numpy(), cam.float().cpu().numpy()
            return self.model.net(x).float().cpu().numpy(), None

    def _fall_back_to_cpu(self, reason: BaseException) -> None:
        warnings.warn(
            f"GPU out of memory even with batch size 1 ({reason}); continuing on the CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        self.device = torch.device("cpu")
        self.model.net.to(self.device)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def run_tiles(
        self,
        tiles: np.ndarray,
        with_cam: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (N, K) and optionally CAMs (N, K, h, w) for prepared tiles.

        ``should_stop`` is polled before every forward pass (raising
        :class:`PredictionCancelled`): a large image is many batches, and a cancel
        must not wait for all of them.
        """
        logits: list[np.ndarray] = []
        cams: list[np.ndarray] = []
        start = 0
        while start < len(tiles):
            if should_stop is not None and should_stop():
                raise PredictionCancelled()
            batch = tiles[start : start + self.batch_size]
            try:
                out, cam = self._forward(batch, with_cam)
            except (RuntimeError, MemoryError) as exc:
                if not is_oom(exc) or self.device.type == "cpu":
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch_size > 1:
                    self.batch_size = max(1, self.batch_size // 2)
                    warnings.warn(
                        f"GPU out of memory; retrying with batch size {self.batch_size}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                else:
                    self._fall_back_to_cpu(exc)
                continue
            logits.append(out)
            if cam is not None:
                cams.append(cam)
            start += len(batch)
        k = self.spec.task.num_classes
        all_logits = np.concatenate(logits) if logits else np.zeros((0, k), np.float32)
        return all_logits, (np.concatenate(cams) if cams else None)

    def to_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits (T, K) of an image's tiles and views -> its probabilities (K,): their mean."""
        t = torch.from_numpy(logits)
        probs = torch.sigmoid(t) if self.spec.task.multilabel else torch.softmax(t, dim=1)
        return probs.mean(dim=0).numpy()

    def predict_prepared(
        self,
        tiles_per_image: Sequence[np.ndarray],
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Probabilities (N, K) for images already turned into tiles by :meth:`prepare`.

        A row of a non-finite output is left NaN, not raised, so the other images of
        the batch keep their answers; callers check each row with :func:`is_finite`.
        """
        if not tiles_per_image:
            return np.zeros((0, self.spec.task.num_classes), np.float32)
        tiles_per_image = [with_views(t, self.spec.input.views) for t in tiles_per_image]
        counts = [len(t) for t in tiles_per_image]
        logits, _ = self.run_tiles(np.concatenate(tiles_per_image), should_stop=should_stop)
        out, start = [], 0
        for n in counts:
            out.append(self.to_probabilities(logits[start : start + n]))
            start += n
        return np.stack(out)

    # -- public prediction API -----------------------------------------------------------

    def _cam_classes(
        self, request: CamRequest, probs: np.ndarray, predicted: list[int]
    ) -> list[int]:
        if request is None:
            return []
        if request == "predicted":
            return list(predicted)
        if request == "all":
            return list(range(len(probs)))
        return [int(c) for c in request]

    def activation_maps(
        self,
        activations: Activations,
        classes: Sequence[int],
        downsample: int = 1,
        mask: np.ndarray | None = None,
    ) -> dict[int, np.ndarray]:
        """Class index -> activation map in [0, 1], at 1/``downsample`` of the image size.

        The maps are stitched straight at the smaller size, a few classes at a
        time, never at full resolution first: 28 full-size maps of a 2048 px
        image would take 470 MB. ``mask`` (bool, the maps' shape; see
        :func:`~.heat.heat_mask`) sets the maps to NaN where it is False: no
        class speaks for the empty background, whatever the network's map says there.
        """
        grid = activations.grid
        if downsample > 1:
            h, w = grid.original
            grid = dataclasses.replace(
                grid,
                original=(math.ceil(h / downsample), math.ceil(w / downsample)),
                pad=(
                    round(grid.pad[0] / downsample),
                    round(grid.pad[1] / downsample),
                    round(grid.pad[2] / downsample),
                    round(grid.pad[3] / downsample),
                ),
            )
        wanted = [int(c) for c in classes]
        out: dict[int, np.ndarray] = {}
        for start in range(0, len(wanted), 4):
            chosen = wanted[start : start + 4]
            out.update(self._stitch(activations.maps, grid, chosen, activations.span))
        if mask is not None:
            out = {c: mask_map(m, mask) for c, m in out.items()}
        return out

    def _stitch(
        self,
        cams: np.ndarray,
        grid: TileGrid,
        classes: list[int],
        span: tuple[int, int] | None = None,
    ) -> dict[int, np.ndarray]:
        if not classes:
            return {}
        if self.spec.task.multilabel:
            heat = torch.sigmoid(torch.from_numpy(cams[:, classes]))
        else:
            heat = torch.softmax(torch.from_numpy(cams), dim=1)[:, classes]
        if span is None:
            stitched = stitch_maps(heat.numpy(), grid)
        else:
            stitched = place_whole_map(heat, grid, span)
        return {c: np.clip(stitched[i], 0, 1) for i, c in enumerate(classes)}

    def _map_activations(
        self,
        image: ImageData,
        whole: bool,
        tiles: np.ndarray,
        grid: TileGrid,
        cams: np.ndarray,
        should_stop: Callable[[], bool] | None,
    ) -> Activations:
        """Return the maps to draw heat maps from, apart from the scored tiles' outputs.

        A tile's map is least reliable at its edge (the receptive field is cut there),
        so tiles that only touch (a resized image an exact multiple of the tile) leave
        a line on the stitched map. The network is fully convolutional: one pass over
        the whole resized image (put back together from the tiles) has no tile edges
        inside it. An image over :data:`WHOLE_PASS_PIXELS` is mapped by its tiles plus
        the half-shifted ones (``prepare(seamless=True)``). Neither pass is scored.
        """
        h, w = grid.resized
        size = grid.size
        # the network's stride, read off the tiles' maps: how many pixels one map cell covers
        cell = (size / cams.shape[-2], size / cams.shape[-1])
        if len(grid.origins) == 1:  # one tile is the whole image: its map is the whole map
            return Activations(cams, grid, span=(size, size))
        if h * w <= WHOLE_PASS_PIXELS:
            full = np.empty((tiles.shape[1], h, w), np.float32)
            for (y, x), tile in zip(grid.origins, tiles, strict=True):
                full[:, y : y + size, x : x + size] = tile
            _, cam = self.run_tiles(full[None], True, should_stop)
            assert cam is not None
            span = (round(cam.shape[-2] * cell[0]), round(cam.shape[-1] * cell[1]))
            return Activations(cam, grid, span=span)
        more, wide = self.prepare(image, whole=whole, seamless=True)
        _, shifted = self.run_tiles(more[wide.scored :], True, should_stop)
        return Activations(np.concatenate([cams, shifted]) if shifted is not None else cams, wide)

    def predict(
        self,
        images: Sequence[ImageData],
        cam_classes: CamRequest = None,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Prediction]:
        """Classify images; ``progress(done, total)`` is called after each image.

        ``should_stop`` is polled between images and between forward passes; when
        it returns True, :class:`PredictionCancelled` is raised.
        """
        results = []
        for i, image in enumerate(images):
            if should_stop is not None and should_stop():
                raise PredictionCancelled()
            results.append(self.predict_one(image, cam_classes, should_stop=should_stop))
            if progress is not None:
                progress(i + 1, len(images))
        return results

    def predict_one(
        self,
        image: ImageData,
        cam_classes: CamRequest = None,
        whole: bool = False,
        should_stop: Callable[[], bool] | None = None,
        keep_activations: bool = False,
    ) -> Prediction:
        """Classify one image.

        ``cam_classes`` asks for activation maps at the image's resolution;
        ``keep_activations`` keeps the network's raw maps in
        ``Prediction.activations`` instead, so that a viewer can draw any class
        later (:meth:`activation_maps`) without running the network again.
        The maps come from a pass of their own (:meth:`_map_activations`), after the
        scored tiles: the probabilities are those of the same tiles in the same
        batches as without it.
        """
        want_maps = cam_classes is not None or keep_activations
        tiles, grid = self.prepare(image, whole=whole)
        # the tiles' own maps are the first rows: with_views puts the tiles first
        logits, cams = self.run_tiles(
            with_views(tiles, self.spec.input.views), want_maps, should_stop
        )
        cams = None if cams is None else cams[: len(tiles)]
        probs = self.to_probabilities(logits)
        if not is_finite(probs):
            raise NonFiniteOutput(self.model_id)
        predicted = decide(probs, self.spec)
        activations = None
        if cams is not None:
            activations = self._map_activations(image, whole, tiles, grid, cams, should_stop)
        maps: dict[int, np.ndarray] = {}
        if activations is not None and cam_classes is not None:
            chosen = self._cam_classes(cam_classes, probs, predicted)
            maps = self.activation_maps(activations, chosen)
        return Prediction(
            image_id=image.image_id,
            source=image.source,
            model_id=self.model_id,
            classes=self.spec.task.classes,
            probabilities=probs.astype(np.float32),
            predicted=predicted,
            cams=maps,
            activations=activations if keep_activations else None,
        )

    def predict_cells(
        self,
        image: ImageData,
        labels: np.ndarray,
        should_stop: Callable[[], bool] | None = None,
        context: np.ndarray | None = None,
        use_context: bool = True,
    ) -> dict[int, Prediction]:
        """Classify each segmented cell on its own crop (other cells masked out).

        With the model's ``cell_context`` > 0, each cell's probabilities are
        blended with its image's (:meth:`with_context`): ``context`` when the
        caller has already predicted the image, else it is predicted here.
        ``use_context=False`` gives the crops' own probabilities.
        """
        from ..image.cells import cell_crops

        crops = cell_crops(image.data, labels)
        if not crops:
            return {}
        tiles = [prepare_cell(crop, image.channel_names, self.spec.input) for _, crop in crops]
        probs = self.predict_prepared(tiles, should_stop)
        if not is_finite(probs):
            raise NonFiniteOutput(self.model_id)
        if use_context and self.spec.cell_context > 0:
            if context is None:
                context = self.predict_one(image, should_stop=should_stop).probabilities
            probs = self.with_context(probs, context)
        out = {}
        for (cell_id, _), p in zip(crops, probs, strict=False):
            out[int(cell_id)] = Prediction(
                image_id=f"{image.image_id}#cell{cell_id}",
                source=image.source,
                model_id=self.model_id,
                classes=self.spec.task.classes,
                probabilities=p.astype(np.float32),
                predicted=decide(p, self.spec),
            )
        return out

    def with_context(self, cell_probs: np.ndarray, image_probs: np.ndarray) -> np.ndarray:
        """Cells' probabilities (N, K) blended with their image's (K,) by ``cell_context``."""
        w = float(self.spec.cell_context)
        return (1.0 - w) * np.asarray(cell_probs) + w * np.asarray(image_probs)[None, :]
