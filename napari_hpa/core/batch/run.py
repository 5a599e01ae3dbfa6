"""Classify whole screens: thousands to millions of images, streamed, resumable.

Why it is built this way
------------------------
* **One inference path.** Decode workers call :meth:`Predictor.prepare` and the
  model runs through :meth:`Predictor.predict_prepared` (per-cell mode:
  :meth:`Predictor.predict_cells`; CAM export: :meth:`Predictor.predict_one`), so a
  batch gives exactly what the GUI and ``napari-hpa predict`` give.
* **Decode overlaps inference.** Reading PNG/TIFF and resizing is CPU work that
  runs in worker processes (a ``forkserver``/``spawn`` pool, so no forked copy of
  torch's thread pools). With a GPU the main process runs the model on pinned
  batches while the workers decode. On a CPU each worker also runs the model
  (one torch thread each, ``infer="workers"``): measured on 2 cores this beats a
  multi-threaded model in the main process, whose OpenMP barriers stall whenever
  a decoder takes a core (docs/benchmarks.md, "Batch"). At most ``window``
  images are in flight, so memory stays flat however many images there are: the
  only thing that grows is the list of *names*.
* **The table is the state** (see :mod:`.table`): rows are appended as
  images finish, a re-run skips what the table holds, and a kill at any moment
  loses at most the images in flight. Error rows count as done, so a corrupt
  file is reported once and never stops the run.
* **Scale-out** to a Dask cluster lives in :mod:`.cluster` and reuses
  :class:`Pipeline` on each worker.

Modules: :mod:`.decode` (workers), :mod:`.pipeline` (model, rows, progress),
:mod:`.table` / :mod:`.parquet` (the table; :mod:`.output` opens it by its suffix),
:mod:`.cluster` (Dask); this one is the entry point, :func:`run_batch`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..image.channels import ChannelMap
from ..image.io import ImageReadError
from ..image.sources import find_images
from ..model.predict import Predictor
from .decode import ModelRef, PoolStream, inline_stream
from .output import open_writer
from .pipeline import (
    BatchProgress,
    Mode,
    Pipeline,
    ProgressFn,
    RunOptions,
    StopFn,
    ThreadTuner,
    default_batch_size,
    default_workers,
    thread_candidates,
    usable_cpus,
)
from .records import plain_text
from .table import BatchError, ResultWriter

__all__ = [
    "BatchError",
    "BatchProgress",
    "BatchSummary",
    "default_batch_size",
    "default_workers",
    "list_sources",
    "run_batch",
]


@dataclass
class BatchSummary:
    """What a run did. ``per_class_counts`` covers the whole table, old rows included.

    ``workers`` decode processes were used; ``threads`` is the model's final
    torch thread count and ``tuning`` the (threads, images/s) the tuner measured.
    ``warnings`` counts blank or saturated images (rows of status ``warning``: the
    probabilities, no predicted class); ``warning_messages`` holds the first lines.
    """

    done: int
    errors: int
    skipped: int
    total: int
    per_class_counts: dict[str, int]
    elapsed: float
    path: Path
    model: str = ""
    #: What ran the network (``torch``, ``onnxruntime``, ``openvino``).
    backend: str = "torch"
    error_messages: list[str] = field(default_factory=list)
    cancelled: bool = False
    workers: int = 0
    threads: int | None = None
    tuning: list[tuple[int, float]] = field(default_factory=list)
    warnings: int = 0
    warning_messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        """Images classified without error or warning in this run."""
        return self.done - self.errors - self.warnings

    @property
    def rate(self) -> float:
        """Images per second in this run."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


def list_sources(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    glob: str | None = None,
    recursive: bool = True,
) -> list[str]:
    """Absolute image sources under ``paths``; absolute so a re-run from elsewhere resumes."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise BatchError("no folder or image given")
    try:
        found = find_images([os.path.abspath(Path(i).expanduser()) for i in items], recursive, glob)
    except ImageReadError as exc:
        raise BatchError(str(exc)) from None
    if not found:
        where = ", ".join(str(i) for i in items)
        raise BatchError(f"no images found in {where}" + (f" matching {glob!r}" if glob else ""))
    return found


def run_batch(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model: Predictor | Any = None,
    *,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    cells: bool = False,
    cam_dir: str | os.PathLike | None = None,
    glob: str | None = None,
    recursive: bool = True,
    scheduler: str | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
    infer: str = "auto",
    backend: str = "auto",
    channels: ChannelMap | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> BatchSummary:
    """Classify every image under ``sources`` and append the results to the table ``out``.

    Parameters
    ----------
    sources
        A folder (walked recursively, HPA channel files grouped into sets), image
        files, or a list of them.
    out
        ``.csv`` (default format) or ``.parquet``. If it exists, its images are
        skipped: a re-run resumes.
    model
        A :class:`Predictor`, or anything :class:`Predictor` accepts (name,
        ``name@version``, folder, None for the default model).
    device, batch_size
        ``device`` for a model given by name. ``batch_size`` is tiles per forward
        pass; default :func:`default_batch_size` (a given Predictor keeps its own).
    workers
        Decode processes (0 = decode in this process); default
        :func:`default_workers`. With a Dask scheduler: workers of ``"local"``.
    cells
        One row per segmented cell (``cell`` column) instead of per image.
    cam_dir
        Also write a TIFF of the predicted classes' activation maps per image.
    glob
        Only files whose name matches this pattern (e.g. ``"*_green.png"``...
        HPA sets are still grouped).
    scheduler
        ``None`` (this machine), ``"local"`` (a Dask LocalCluster) or a Dask
        scheduler address ``tcp://host:port``.
    threads
        Torch threads of the model on the CPU; default: chosen while running by
        :class:`ThreadTuner` among :func:`thread_candidates`.
    infer
        Where the model runs: ``"main"`` (this process, fed by the decode
        workers: the GPU path, batches pinned), ``"workers"`` (each worker
        decodes and classifies with one thread: no OpenMP barriers shared with
        the decoders, the fastest on a CPU), or ``"auto"`` (workers on a CPU in
        per-image mode, else main).
    backend
        What runs the network of a model given by name (``auto``, ``torch``,
        ``onnxruntime``, ``openvino``): ``"auto"`` is the fastest installed CPU runtime
        on a CPU, torch on a GPU. A given Predictor keeps its own. The model is exported
        (once, cached) before the workers start, so that they all load the one graph.
    channels
        Which image plane is which model channel (``--channels``, parsed by
        :func:`~napari_hpa.core.image.channels.parse_channel_map`); None: by name or
        position as the reader gives them. An image the map does not fit gets an
        error row.
    progress
        Called with a :class:`BatchProgress` at most every 0.1 s and at the end.
    should_stop
        Polled between images; True stops within about one model batch, leaving a
        consistent table that a re-run completes.

    Raises
    ------
    BatchError
        For a missing folder, a bad output name, or an output of other columns.
    """
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise BatchError(f"{out}: the output must end in .csv or .parquet")
    if out.is_dir():
        raise BatchError(f"{out} is a folder; give a file name ending in .csv or .parquet")
    if not out.parent.exists():
        raise BatchError(f"{out.parent}: the output folder does not exist")
    predictor = model if isinstance(model, Predictor) else _load(model, device, 1, backend)
    predictor.ensure_backend()
    if batch_size is not None:
        predictor.batch_size = max(1, int(batch_size))
    elif not isinstance(model, Predictor):
        predictor.batch_size = default_batch_size(predictor.device.type)
    mode: Mode = "cells" if cells else ("image" if cam_dir is not None else "tiles")
    n = default_workers(predictor.device.type) if workers is None else max(0, int(workers))
    if infer not in ("auto", "main", "workers"):
        raise BatchError(f"infer must be auto, main or workers, not {infer!r}")
    in_workers = mode == "tiles" and (
        infer == "workers" or (infer == "auto" and predictor.device.type == "cpu")
    )
    pool = None
    if scheduler is None and n > 0:
        ref = ModelRef.of(predictor)
        if in_workers:
            per_worker = threads or max(1, usable_cpus() // n)
            window = 2 * n + 2
            pool = PoolStream(ref, n, window, "probs", per_worker, predictor.batch_size, channels)
        else:
            window = 2 * n + 1 if mode != "tiles" else max(2 * n + 2, 2 * predictor.batch_size)
            pool = PoolStream(ref, n, window, mode, channels=channels)
        pool.start()
    try:
        found = list_sources(sources, glob, recursive)
        writer = _open(out, predictor, cells)
    except BaseException:
        if pool is not None:
            pool.shutdown()
        raise
    cam = Path(cam_dir).expanduser() if cam_dir is not None else None
    single = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    root = Path(single[0]).expanduser() if len(single) == 1 and Path(single[0]).is_dir() else None
    try:
        pending = [s for s in found if s not in writer.state.done]
        skipped = len(found) - len(pending)
        options = RunOptions(
            mode, cam, root, progress, should_stop, len(found), skipped, channels or None
        )
        if scheduler is not None:
            from .cluster import run_dask

            pipe = run_dask(
                pending,
                writer,
                predictor,
                options,
                scheduler=scheduler,
                workers=workers,
                chunk_size=chunk_size,
            )
        else:
            pipe = Pipeline(predictor, writer, options)
            if pool is None or not pending:
                with _main_threads(predictor, threads):
                    pipe.run(inline_stream(predictor, pending, mode, channels))
            else:
                if predictor.device.type == "cpu" and threads is None and not in_workers:
                    pipe.tuner = ThreadTuner(thread_candidates(n))
                tuned = pipe.tuner.current if pipe.tuner is not None else None
                with _main_threads(predictor, threads or tuned):
                    pipe.run(pool.stream(pending))
    finally:
        if pool is not None:
            pool.shutdown()
        writer.close()
    classes = predictor.spec.task.classes
    counts = {
        classes[i]: int(c)
        for i, c in sorted(writer.state.class_counts.items())
        if 0 <= i < len(classes)
    }
    return BatchSummary(
        done=pipe.done,
        errors=pipe.errors,
        skipped=skipped,
        total=len(found),
        per_class_counts=counts,
        elapsed=pipe.elapsed,
        path=out,
        model=predictor.model_id,
        backend=predictor.backend,
        error_messages=pipe.error_messages,
        cancelled=pipe.cancelled,
        workers=0 if pool is None else n,
        threads=pipe.tuner.current
        if pipe.tuner
        else (pool.threads if in_workers and pool else threads),
        tuning=list(pipe.tuner.history) if pipe.tuner else [],
        warnings=pipe.warnings,
        warning_messages=pipe.warning_messages,
    )


def _load(model: Any, device: str, batch_size: int, backend: str) -> Predictor:
    try:
        return Predictor(model, device=device, batch_size=batch_size, backend=backend)
    except (LookupError, ValueError) as exc:  # CheckpointError is a ValueError
        raise BatchError(str(exc).strip("'\"")) from None


def _open(out: Path, predictor: Predictor, cells: bool) -> ResultWriter:
    """Open the table; refuse one that holds another model's results.

    Mixing two models' results would make a table nobody can interpret.
    """
    try:
        writer = open_writer(out, predictor.spec.task.classes, cells)
    except OSError as exc:
        raise BatchError(f"{out}: cannot write the table ({exc.strerror or exc})") from None
    other = sorted(writer.state.models - {plain_text(predictor.model_id)})
    if other:
        writer.close()
        raise BatchError(
            f"{out} holds results of {', '.join(other)}, not {predictor.model_id}; "
            "use another output file to compare models"
        )
    return writer


@contextlib.contextmanager
def _main_threads(predictor: Predictor, threads: int | None) -> Iterator[None]:
    """Torch threads of the model for this run (CPU only), restored afterwards."""
    import torch

    if predictor.device.type != "cpu" or not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
