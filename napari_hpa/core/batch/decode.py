"""Decoding for a batch: read images and make model input in worker processes.

Why worker processes: reading PNG/TIFF and resizing is CPU work that would
otherwise stall the model. The pool uses ``forkserver`` (or ``spawn``), never a
plain ``fork`` of a process that runs torch, whose thread pools do not survive a
fork. Workers call :meth:`Predictor.prepare` of the same model (loaded once per
process, :func:`cached_predictor`), so their tiles are exactly what
``napari-hpa predict`` would feed the network. At most ``window`` images are in
flight, which is what keeps a batch's memory flat however many images there are.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..image.channels import ChannelMap, apply_channel_map
from ..image.exposure import exposure_problem
from ..image.io import ImageData, ImageReadError, read_image
from ..model.predict import Predictor
from ..process import pid_alive

#: What a worker returns: tiles (the usual), probabilities (it runs the model too:
#: the CPU default), a whole image (CAMs) or an image and its cells.
Mode = Literal["tiles", "probs", "image", "cells"]


# ----------------------------------------------------------------------------- the model in workers
@dataclass(frozen=True)
class ModelRef:
    """How a worker process gets the same model: a folder, or the weights themselves.

    A model saved on disk travels as its path (cheap, and the key of the
    per-process cache); an in-memory model (just trained, never saved) travels
    once per worker as a CPU state dict.
    """

    key: str
    path: str | None = None
    spec: Any = None
    state: dict | None = None
    #: The backend the main process settled on (``Predictor.ensure_backend``): workers
    #: use the same one, from the graph the main process exported.
    backend: str = "torch"

    @classmethod
    def of(cls, predictor: Predictor) -> ModelRef:
        """Refer to ``predictor``'s model: its folder if saved, else a copy of its weights."""
        path = predictor.model.path
        backend = predictor.backend
        if path is not None and Path(path).is_dir():
            where = str(Path(path).resolve())
            return cls(key=f"path:{where}:{backend}", path=where, backend=backend)
        net = predictor.model.net
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        key = f"mem:{predictor.model_id}:{id(net)}:{backend}"
        return cls(key=key, spec=predictor.spec, state=state, backend=backend)

    def load(self, device: str = "cpu", batch_size: int = 8) -> Predictor:
        """Load the model in this process (the worker's side of :meth:`of`)."""
        if self.path is not None:
            return Predictor(self.path, device=device, batch_size=batch_size, backend=self.backend)
        from ..model.architectures.base import build_model
        from ..model.checkpoint import LoadedModel

        spec = self.spec
        net = build_model(
            spec.arch, len(spec.input.channels), spec.task.num_classes, **spec.arch_kwargs
        )
        assert self.state is not None  # a ModelRef has a path or the weights
        net.load_state_dict(self.state)
        loaded = LoadedModel(spec, net.eval(), None)
        return Predictor(loaded, device=device, batch_size=batch_size, backend=self.backend)


_PREDICTORS: dict[tuple[str, str], Predictor] = {}


def cached_predictor(ref: ModelRef, device: str = "cpu", batch_size: int = 8) -> Predictor:
    """One Predictor per process and model: workers load the model once, not per task."""
    key = (ref.key, str(device))
    predictor = _PREDICTORS.get(key)
    if predictor is None:
        predictor = _PREDICTORS[key] = ref.load(device, batch_size)
    predictor.batch_size = max(1, int(batch_size))
    return predictor


# ----------------------------------------------------------------------------- decoding
@dataclass
class Decoded:
    """A decoded image, ready for the model, or the reason it could not be.

    ``warning`` names a blank or saturated image (:func:`.exposure.exposure_problem`):
    it is classified, but its row gets no predicted class.
    """

    source: str
    tiles: np.ndarray | None = None
    probs: np.ndarray | None = None
    image: ImageData | None = None
    labels: np.ndarray | None = None
    error: str | None = None
    warning: str | None = None


def error_message(source: str, exc: BaseException) -> str:
    """One line for the table: readers' errors already name the file; others get it added."""
    if isinstance(exc, ImageReadError):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return " ".join(f"{source}: {text}".split())


def decode(
    predictor: Predictor, source: str, mode: Mode, channels: ChannelMap | None = None
) -> Decoded:
    """Read one image and do the CPU work for ``mode``; never raises for a bad image.

    ``channels`` is the ``--channels`` map (which plane is which model channel). A
    blank or saturated image is decoded as any other, with its :attr:`Decoded.warning`
    (in cells mode it is not segmented: it has no cells to trust).
    """
    try:
        image = apply_channel_map(read_image(source), channels)
        problem = exposure_problem(image.data, image.channel_names, predictor.spec.input.invert)
        warning = f"{source}: {problem}" if problem else None
        if mode in ("tiles", "probs"):
            tiles, _ = predictor.prepare(image)
            if mode == "probs":
                probs = predictor.predict_prepared([tiles])[0]
                return Decoded(source, probs=probs, warning=warning)
            return Decoded(source, tiles=tiles, warning=warning)
        predictor.prepare(image, whole=True)  # fail early (channels) in the worker
        if mode == "cells" and warning is None:
            from ..image.cells import segment_image

            return Decoded(source, image=image, labels=segment_image(image))
        return Decoded(source, image=image, warning=warning)
    except MemoryError:
        return Decoded(source, error=f"{source}: not enough memory to decode the image")
    except Exception as exc:  # a batch must go on: every image's failure becomes a row
        return Decoded(source, error=error_message(source, exc))


_WORKER: dict[str, Any] = {}


def _watch_parent(pid: int, interval: float = 1.0) -> None:
    """Exit when the main process is gone.

    After a ``kill -9`` of the batch, a pool worker would otherwise wait forever on
    its task queue (and keep the forkserver alive).
    """
    while pid_alive(pid):
        time.sleep(interval)
    os._exit(1)


def _init_worker(ref: ModelRef, threads: int, batch_size: int, parent: int) -> None:
    """Worker process start: Ctrl-C is the parent's business; one model, few threads."""
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    import torch

    torch.set_num_threads(max(1, threads))
    _WORKER["predictor"] = cached_predictor(ref, "cpu", batch_size)


def _noop() -> None:
    """Warm-up task: makes the pool start its workers (and run their initializer) now."""


def _decode_task(source: str, mode: Mode, channels: ChannelMap | None = None) -> Decoded:
    return decode(_WORKER["predictor"], source, mode, channels)


def _mp_context() -> mp.context.BaseContext:
    """``forkserver`` where available: forking a process that runs torch can deadlock."""
    methods = mp.get_all_start_methods()
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        with contextlib.suppress(Exception):
            ctx.set_forkserver_preload([__name__])  # import torch once, not per worker
        return ctx
    return mp.get_context("spawn")


def inline_stream(
    predictor: Predictor, sources: Iterable[str], mode: Mode, channels: ChannelMap | None = None
) -> Iterator[Decoded | None]:
    """Decode in this process (``workers=0``, Dask tasks): simple, no overlap."""
    for source in sources:
        yield decode(predictor, source, mode, channels)


class PoolStream:
    """Decode in worker processes with at most ``window`` images in flight.

    Iterating yields a :class:`Decoded` as each finishes (in completion order),
    or ``None`` when nothing is ready, so the consumer can run the model on a
    partial batch or poll for cancellation. A crashed worker (a decoder
    segfault, the OOM killer) breaks the pool: the images in flight are retried
    one at a time in a fresh pool and the one that crashes it again gets an
    error row. ``channels`` (the ``--channels`` map) goes with every task.
    """

    def __init__(
        self,
        ref: ModelRef,
        workers: int,
        window: int,
        mode: Mode,
        threads: int = 1,
        batch_size: int = 8,
        channels: ChannelMap | None = None,
    ) -> None:
        self.ref, self.workers, self.window, self.mode = ref, workers, max(1, window), mode
        self.threads, self.batch_size = max(1, threads), max(1, batch_size)
        self.channels = channels
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=_mp_context(),
            initializer=_init_worker,
            initargs=(self.ref, self.threads, self.batch_size, os.getpid()),
        )

    def start(self) -> PoolStream:
        """Start the workers now, before the first image is submitted.

        Importing torch and loading the model take seconds; started now, that happens
        while the main process lists the folder and reads the old table.
        """
        if self._pool is None:
            self._pool = self._new_pool()
            for _ in range(self.workers):
                self._pool.submit(_noop)
        return self

    def shutdown(self) -> None:
        """Stop the workers, dropping queued tasks; a later :meth:`start` makes a new pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def stream(self, sources: Iterable[str]) -> Iterator[Decoded | None]:
        """Yield each image's :class:`Decoded` as it finishes, or ``None`` while none is."""
        it = iter(sources)
        inflight: dict[Future, str] = {}
        self.start()
        assert self._pool is not None
        block = False
        try:
            while True:
                while len(inflight) < self.window:
                    source = next(it, None)
                    if source is None:
                        break
                    try:
                        task = self._pool.submit(_decode_task, source, self.mode, self.channels)
                        inflight[task] = source
                    except BrokenProcessPool:  # a worker died since the last result
                        suspects = [*inflight.values(), source]
                        inflight.clear()
                        yield from self._isolate(suspects)
                if not inflight:
                    return
                done, _ = wait(inflight, timeout=0.2 if block else 0, return_when=FIRST_COMPLETED)
                if not done:
                    block = True
                    yield None
                    continue
                block = False
                broken = []
                for fut in done:
                    source = inflight.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        broken.append(source)
                if broken:
                    suspects = broken + list(inflight.values())
                    inflight.clear()
                    yield from self._isolate(suspects)
        finally:
            self.shutdown()

    def _isolate(self, suspects: list[str]) -> Iterator[Decoded]:
        """Retry the images of a crashed pool one by one to find the culprit."""
        assert self._pool is not None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        crashes = 0
        for source in suspects:
            try:
                task = self._pool.submit(_decode_task, source, self.mode, self.channels)
                result = task.result()
                crashes = 0
                yield result
            except BrokenProcessPool as exc:
                crashes += 1
                self._pool.shutdown(wait=False, cancel_futures=True)
                if crashes >= 3:  # not an image's fault: the workers cannot run at all
                    raise RuntimeError(
                        f"decode worker processes keep crashing ({exc}); run with workers=0 "
                        "(--workers 0) to see the error in this process"
                    ) from exc
                self._pool = self._new_pool()
                yield Decoded(source, error=f"{source}: the decoder process crashed on this image")
