"""The consumer side of a batch: batching, the model, rows, CAM files, progress.

:class:`Pipeline` takes decoded images (from a worker pool or decoded inline),
runs the model through the :class:`Predictor`, and appends rows to the result
table. The same class runs a local batch and each Dask task, so both write
identical rows. :class:`ThreadTuner` picks the model's torch thread count from
the pipeline's measured rate, because the best value depends on the machine's
other load as much as on the model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..image.channels import ChannelMap
from ..image.io import ImageReadError
from ..image.writers import MAPS_SUFFIX, write_maps
from ..model.checkpoint import ModelSpec
from ..model.predict import PredictionCancelled, Predictor
from ..model.prediction import NonFiniteOutput, Prediction, decide, is_finite
from .decode import Decoded, Mode, error_message
from .records import plain_text
from .table import BatchError, ResultWriter, Row

ProgressFn = Callable[["BatchProgress"], None]
StopFn = Callable[[], bool]

#: Seconds between two progress callbacks (the last one is always sent).
PROGRESS_INTERVAL = 0.1
#: Seconds between two fsyncs of the table.
SYNC_INTERVAL = 2.0
#: Error messages kept in the summary.
MAX_ERROR_MESSAGES = 20


# ----------------------------------------------------------------------------- results
@dataclass
class BatchProgress:
    """Where a run stands; passed to the ``progress`` callback.

    ``done``, ``errors`` and ``warnings`` count images finished in this run (``done``
    includes the others; a warning is a blank or saturated image, classified without a
    predicted class); ``skipped`` were already in the table; ``total`` is all images
    found. ``recent_errors`` holds the messages since the previous callback, so
    a viewer can list corrupt files as they occur even though calls are throttled.
    """

    done: int
    errors: int
    skipped: int
    total: int
    elapsed: float
    last_image: str | None = None
    recent_errors: list[str] = field(default_factory=list)
    warnings: int = 0

    @property
    def remaining(self) -> int:
        """Images neither in the table before the run nor finished in it."""
        return max(0, self.total - self.skipped - self.done)

    @property
    def rate(self) -> float:
        """Images per second in this run."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None before the first image)."""
        return self.remaining / self.rate if self.rate > 0 else None

    @property
    def fraction(self) -> float:
        """Share of all images in the table now (1.0 when there are none)."""
        return (self.skipped + self.done) / self.total if self.total else 1.0


# ----------------------------------------------------------------------------- the pipeline
@dataclass(frozen=True)
class RunOptions:
    """How a run turns images into rows, beside the model and the table.

    One record, so that a local run (:class:`Pipeline`) and a Dask run
    (:func:`~.cluster.run_dask`) take the same options under the same names.

    Attributes
    ----------
    mode
        ``"tiles"`` (whole images from prepared tiles), ``"image"`` (whole images with
        CAM files) or ``"cells"`` (one row per segmented cell).
    cam_dir, cam_root
        Where CAM files go, and the folder whose layout they mirror (None: flat).
    progress, should_stop
        Called with a :class:`BatchProgress` at most every :data:`PROGRESS_INTERVAL`
        seconds; polled between batches to cancel.
    total, skipped
        All images found, and those already in the table (for the progress counts).
    channels
        The ``--channels`` map (model channel -> image plane) every image is read with.
    """

    mode: Mode
    cam_dir: Path | None = None
    cam_root: Path | None = None
    progress: ProgressFn | None = None
    should_stop: StopFn | None = None
    total: int = 0
    skipped: int = 0
    channels: ChannelMap | None = None


class Pipeline:
    """Decoded images in, rows out: batching, the model, CAM files, progress, stop.

    One instance serves a local run (decode in a process pool) and a Dask task
    (decode inline on the worker), so both write identical rows.
    """

    def __init__(self, predictor: Predictor, writer: ResultWriter, options: RunOptions) -> None:
        self.predictor = predictor
        self.writer = writer
        self.options = options
        self.mode = options.mode
        self.cam_dir = options.cam_dir
        self.cam_root = options.cam_root
        self.progress_fn = options.progress
        self.should_stop = options.should_stop
        self.total, self.skipped = options.total, options.skipped
        self.done = self.errors = self.warnings = 0
        self.error_messages: list[str] = []
        self.warning_messages: list[str] = []
        self.cancelled = False
        self._recent: list[str] = []
        self._batch: list[Decoded] = []
        self._tiles = 0
        self._start = time.perf_counter()
        self._last_report = 0.0
        self._last_sync = time.perf_counter()
        self._last_image: str | None = None
        self.tuner: ThreadTuner | None = None

    @property
    def spec(self) -> ModelSpec:
        """The model's spec (classes, thresholds, input)."""
        return self.predictor.spec

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self._start

    def run(self, stream: Iterable[Decoded | None]) -> bool:
        """Consume ``stream``; True if it finished, False if ``should_stop`` ended it."""
        self._start = time.perf_counter()
        self.report(force=True)
        try:
            for item in stream:
                if self.should_stop is not None and self.should_stop():
                    self.cancelled = True
                    break
                if item is None:  # nothing decoded right now: use the idle model
                    self.flush()
                    continue
                self.add(item)
            if not self.cancelled:
                self.flush()
        except PredictionCancelled:  # stopped between two forward passes of a batch
            self.cancelled = True
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a generator's finally shuts its worker pool down now, not at GC
        self.writer.sync()
        self.report(force=True)
        return not self.cancelled

    def add(self, item: Decoded) -> None:
        """Take one decoded image: write its row now, or batch its tiles for the model."""
        if item.error is not None:
            self._write(
                [Row(item.source, self.predictor.model_id, status="error", error=item.error)]
            )
            return
        if item.probs is not None:  # a worker ran the model
            p = item.probs.astype(np.float32)
            self._write([self._row(item, p)])
            return
        if self.mode != "tiles":
            self._write(self._one(item))
            return
        assert item.tiles is not None
        self._batch.append(item)
        self._tiles += len(item.tiles)
        if self._tiles >= self.predictor.batch_size:
            self.flush()

    def flush(self) -> None:
        """Run the model on the images gathered so far (one forward pass per batch)."""
        if not self._batch:
            return
        batch, self._batch, self._tiles = self._batch, [], 0
        # should_stop between forward passes: a batch of big images is many passes, and
        # its rows are simply not written (the re-run does them).
        tiles = [d.tiles for d in batch if d.tiles is not None]  # add() batches only tiles
        probs = self.predictor.predict_prepared(tiles, self.should_stop)
        rows = [self._row(d, p.astype(np.float32)) for d, p in zip(batch, probs, strict=True)]
        self._write(rows)

    def _row(self, item: Decoded, probs: np.ndarray) -> Row:
        """Make an image's row: its predicted classes, or none and a blank image's warning."""
        model = self.predictor.model_id
        if not is_finite(probs):  # a damaged model: never an ``ok`` row of NaN
            error = f"{item.source}: {NonFiniteOutput(model)}"
            return Row(item.source, model, status="error", error=error)
        if item.warning is not None:
            return Row(item.source, model, probs, [], status="warning", error=item.warning)
        return Row(item.source, model, probs, decide(probs, self.spec))

    def _one(self, item: Decoded) -> list[Row]:
        """Per-cell or CAM mode: a whole image at a time, through the Predictor's own API."""
        assert item.image is not None
        model = self.predictor.model_id
        image = item.image
        want_cam = self.cam_dir is not None
        try:
            if item.warning is not None:  # a blank image: no class, no cells, no maps of them
                if self.mode == "cells":
                    return [Row(item.source, model, status="warning", error=item.warning)]
                pred = self.predictor.predict_one(image, should_stop=self.should_stop)
                return [self._row(item, pred.probabilities)]
            if self.mode == "cells":
                assert item.labels is not None
                cells = self.predictor.predict_cells(image, item.labels, self.should_stop)
                if not cells:
                    msg = f"{item.source}: no cells found in the image"
                    return [Row(item.source, model, status="error", error=msg, cell=None)]
                rows = [
                    Row(item.source, model, p.probabilities, p.predicted, cell=c)
                    for c, p in sorted(cells.items())
                ]
                if want_cam:
                    classes = sorted({i for r in rows for i in r.predicted})
                    self._save_cam(self.predictor.predict_one(image, cam_classes=classes))
            else:
                pred = self.predictor.predict_one(
                    image,
                    cam_classes="predicted" if want_cam else None,
                    should_stop=self.should_stop,
                )
                rows = [Row(item.source, model, pred.probabilities, pred.predicted)]
                if want_cam:
                    self._save_cam(pred)
            return rows
        except BatchError:  # the output failed, not the image: stop the run
            raise
        except (ImageReadError, ValueError) as exc:
            return [Row(item.source, model, status="error", error=error_message(item.source, exc))]

    def _save_cam(self, pred: Prediction) -> None:
        """TIFF of the predicted classes' maps, written before the row.

        Through :func:`~napari_hpa.core.image.writers.write_maps`: atomically, and in a
        file that records its image, so two folders' ``x.png`` (``batch a b --cam``) get
        two files, and a re-run replaces each image's own file and nobody else's.
        """
        assert self.cam_dir is not None
        if not pred.cams:
            return
        folder, stem = cam_place(self.cam_dir, pred.source, self.cam_root)
        classes = sorted(pred.cams)
        stack = np.stack([pred.cams[c] for c in classes]).astype(np.float32)
        names = [pred.classes[c] for c in classes]
        try:
            write_maps(folder, stem, pred.source, stack, names)
        except OSError as exc:  # a full disk or a read-only folder stops the run, row unwritten
            raise BatchError(
                f"{folder / stem}{MAPS_SUFFIX}: cannot write the activation map "
                f"({exc.strerror or exc}); the rows before are kept and a re-run resumes"
            ) from None

    def _write(self, rows: list[Row]) -> None:
        by_image: dict[str, list[Row]] = {}
        for row in rows:
            by_image.setdefault(row.image, []).append(row)
        if self.mode == "cells":
            for group in by_image.values():  # one write per image: its cells stay together
                self.writer.write(group)
        else:
            self.writer.write(rows)
        for image, group in by_image.items():
            self.done += 1
            self._last_image = image
            message = plain_text(group[0].error)  # one line, as in the table
            if group[0].status == "warning":
                self.warnings += 1
                if len(self.warning_messages) < MAX_ERROR_MESSAGES:
                    self.warning_messages.append(message)
            elif group[0].status != "ok":
                self.errors += 1
                self._recent.append(message)
                if len(self.error_messages) < MAX_ERROR_MESSAGES:
                    self.error_messages.append(message)
        now = time.perf_counter()
        if now - self._last_sync >= SYNC_INTERVAL:
            self.writer.sync()
            self._last_sync = now
        if self.tuner is not None:
            threads = self.tuner.update(now, self.done)
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
        self.report()

    def record(
        self,
        done: int,
        errors: int,
        messages: Sequence[str],
        last: str | None,
        warnings: Sequence[str] = (),
        n_warnings: int = 0,
    ) -> None:
        """Count images finished elsewhere (a Dask worker) and report them.

        ``warnings`` are the first of the ``n_warnings`` blank or saturated images' lines.
        """
        self.done += done
        self.errors += errors
        self.warnings += n_warnings
        self._recent.extend(messages)
        room = MAX_ERROR_MESSAGES - len(self.error_messages)
        self.error_messages.extend(list(messages)[: max(0, room)])
        room = MAX_ERROR_MESSAGES - len(self.warning_messages)
        self.warning_messages.extend(list(warnings)[: max(0, room)])
        self._last_image = last or self._last_image
        self.report()

    def report(self, force: bool = False) -> None:
        """Call ``progress``, at most every :data:`PROGRESS_INTERVAL` seconds unless ``force``."""
        now = time.perf_counter()
        if self.progress_fn is None or (not force and now - self._last_report < PROGRESS_INTERVAL):
            return
        self._last_report = now
        recent, self._recent = self._recent, []
        self.progress_fn(
            BatchProgress(
                self.done,
                self.errors,
                self.skipped,
                self.total,
                self.elapsed,
                self._last_image,
                recent,
                self.warnings,
            )
        )


def cam_place(cam_dir: Path, source: str, root: Path | None) -> tuple[Path, str]:
    """Folder and stem of an image's maps: ``<cam_dir>/<source relative to root>``.

    Subfolders of ``root`` are kept. Without one root (several folders), or for an
    image outside it, the maps go flat into ``cam_dir``; same-named images then get
    ``x-2_cam.tif`` ..., as :func:`~napari_hpa.core.image.writers.write_maps` decides.
    """
    src = Path(source)
    try:
        rel = src.resolve().relative_to(root.resolve()) if root is not None else Path(src.name)
    except ValueError:
        rel = Path(src.name)
    return cam_dir / rel.parent, rel.name


# ----------------------------------------------------------------------------- defaults
def usable_cpus() -> int:
    """Count the cores this process may run on (its affinity mask, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers(device: str = "cpu") -> int:
    """Worker processes: one per core (at most 8 on the CPU, 16 beside a GPU).

    On the CPU the workers decode *and* run the model (``infer="workers"``), one
    process per core with ``cores // workers`` torch threads each: independent
    single-threaded models keep every core busy without the OpenMP barriers of a
    multi-threaded model that shares its cores with decoders. Beside a GPU they
    only decode, leaving one core to feed the GPU. More than 8 CPU workers would
    mostly add memory (each holds torch and the model), so big machines give each
    worker more threads instead.
    """
    cpus = usable_cpus()
    if device != "cpu":
        return max(1, min(cpus - 1, 16))
    return max(1, min(cpus, 8))


def default_batch_size(device: str = "cpu") -> int:
    """Tiles per forward pass: small on the CPU, large on a GPU.

    On the CPU the activations of a small batch stay in cache (EfficientNet-Lite0,
    160 px tiles, 2 cores: 4 tiles 31 img/s, 16 tiles 18 img/s); a GPU needs big
    batches to be busy.
    """
    return 4 if device == "cpu" else 32


def thread_candidates(workers: int) -> list[int]:
    """Torch thread counts the :class:`ThreadTuner` tries for the model on the CPU."""
    cpus = usable_cpus()
    return sorted({1, max(1, cpus - workers), cpus})


class ThreadTuner:
    """Choose the model's torch thread count by measuring the pipeline's own rate.

    Why measure: whether the model gains from more threads while decode workers
    share the cores depends on the model, the images and the machine's other
    load (on a busy machine one thread is often several times faster than two,
    as an OpenMP barrier waits for a descheduled thread). After a warm-up each
    candidate runs for at least ``phase`` seconds and ``min_batches`` batches;
    the fastest is kept for ``hold`` seconds, then the probe repeats, so a long
    run adapts when the machine's load changes.
    """

    def __init__(
        self,
        candidates: Sequence[int],
        phase: float = 2.0,
        hold: float = 300.0,
        min_batches: int = 3,
    ) -> None:
        self.candidates = list(dict.fromkeys(int(c) for c in candidates)) or [1]
        self.phase, self.hold, self.min_batches = phase, hold, min_batches
        self.current = self.candidates[-1]  # torch's own default: all cores
        self.history: list[tuple[int, float]] = []
        self._state = "start"
        self._queue: list[int] = []
        self._rates: dict[int, float] = {}
        self._mark = (0.0, 0)
        self._until = 0.0
        self._batches = 0

    def update(self, now: float, done: int) -> int | None:
        """Call after each batch; returns the new thread count when it changes."""
        if len(self.candidates) < 2:
            return None
        if self._state == "start":
            self._begin("warmup", now, done, self.phase)
            return None
        self._batches += 1
        if now < self._until or (self._state != "hold" and self._batches < self.min_batches):
            return None
        if self._state == "probe":
            t0, d0 = self._mark
            self._rates[self.current] = rate = (done - d0) / max(now - t0, 1e-9)
            self.history.append((self.current, rate))
        else:  # end of warm-up or of a hold: probe every candidate again
            self._queue, self._rates = list(self.candidates), {}
        if self._queue:
            self._begin("probe", now, done, self.phase)
            return self._switch(self._queue.pop(0))
        self._begin("hold", now, done, self.hold)
        return self._switch(max(self._rates, key=self._rates.__getitem__))

    def _begin(self, state: str, now: float, done: int, length: float) -> None:
        self._state, self._mark, self._until, self._batches = state, (now, done), now + length, 0

    def _switch(self, threads: int) -> int | None:
        if threads == self.current:
            return None
        self.current = threads
        return threads
