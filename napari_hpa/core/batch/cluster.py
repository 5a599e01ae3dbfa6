"""Scale a batch out to a Dask cluster: chunks of images, one part file per chunk.

Why this design
---------------
* The driver never ships pixels: a task is a list of image *names*; workers read
  the images from the shared file system, so the scheduler's memory stays small.
* Each worker process loads the model once (:func:`.decode.cached_predictor`, keyed
  by the model's folder), not once per chunk.
* A task writes its rows to its own CSV part file (temporary name, renamed when
  complete) and returns only counts; the driver folds finished parts into the one
  table with :func:`.table.merge_parts`, which skips images already there.
  So the table has the same columns and the same rows as a local run, a chunk run
  twice (a lost worker, a re-run after cancel) never duplicates rows, and parts
  left by a killed driver are merged by the next run.
* At most ``2 x workers`` chunks are submitted at a time, so a million-image list
  does not become a million futures on the scheduler.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..image.channels import ChannelMap
from ..model.predict import Predictor
from .decode import Mode, ModelRef, cached_predictor, inline_stream
from .pipeline import BatchProgress, Pipeline, RunOptions
from .table import (
    BatchError,
    CsvWriter,
    ResultWriter,
    clean_stale_parts,
    merge_parts,
    new_worker_part,
    parts_dir,
    remove_empty_parts_dir,
)

#: Images per Dask task when not given: enough to amortise scheduling, few enough to balance.
MAX_CHUNK = 256


@dataclass
class ChunkResult:
    """What a task returns: where its rows are and how many of them failed."""

    part: str
    done: int
    errors: int
    error_messages: list[str] = field(default_factory=list)
    last_image: str | None = None
    warnings: int = 0
    warning_messages: list[str] = field(default_factory=list)


def run_chunk(
    sources: Sequence[str],
    ref: ModelRef,
    device: str,
    batch_size: int,
    mode: Mode,
    parts: str,
    classes: Sequence[str],
    cells: bool,
    cam_dir: str | None,
    cam_root: str | None,
    channels: ChannelMap | None = None,
) -> ChunkResult:
    """Classify ``sources`` on this Dask worker into a new part file (one task)."""
    predictor = cached_predictor(ref, device, batch_size)
    tmp, final = new_worker_part(Path(parts))
    writer = CsvWriter(tmp, classes, cells, float_format="%.9g", lock=False)
    try:
        cams = Path(cam_dir) if cam_dir else None
        root = Path(cam_root) if cam_root else None
        options = RunOptions(mode, cam_dir=cams, cam_root=root, channels=channels)
        pipe = Pipeline(predictor, writer, options)
        pipe.run(inline_stream(predictor, sources, mode, channels))
    finally:
        writer.close()
    os.replace(tmp, final)
    last = sources[-1] if sources else None
    return ChunkResult(
        str(final),
        pipe.done,
        pipe.errors,
        pipe.error_messages[:5],
        last,
        pipe.warnings,
        pipe.warning_messages[:5],
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _client(scheduler: str, workers: int | None):
    """Connect to ``tcp://...`` or start a LocalCluster (``"local"``): (client, cluster)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BatchError(
            "--scheduler/--dask needs dask.distributed (pip install distributed)"
        ) from None
    if scheduler == "local":
        cpus = os.cpu_count() or 1
        n = workers if workers else max(1, min(cpus, 8))
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        )
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="20s"), None
    except (OSError, TimeoutError) as exc:
        raise BatchError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from None


def run_dask(
    pending: Sequence[str],
    writer: ResultWriter,
    predictor: Predictor,
    options: RunOptions,
    *,
    scheduler: str,
    workers: int | None = None,
    chunk_size: int | None = None,
) -> Pipeline:
    """Run ``pending`` on a Dask cluster and merge the parts into ``writer``'s table.

    ``options`` are those of a local run; CAM files are written by the workers.
    Returns a :class:`Pipeline` that only carries the counts (for the summary).
    """
    mode, cam_dir, cam_root = options.mode, options.cam_dir, options.cam_root
    if predictor.model.path is None:
        raise BatchError("a Dask run needs a model saved on disk (workers load it by its folder)")
    ref = ModelRef.of(predictor)
    parts = parts_dir(writer.out)
    clean_stale_parts(writer.out)
    if parts.is_dir():  # rows of a previous run's finished chunks that were never merged
        merge_parts(writer)
        pending = [s for s in pending if s not in writer.state.done]
        options = replace(options, skipped=options.total - len(pending))
    tally = Pipeline(predictor, writer, options)  # never runs: it only counts
    if not pending:
        tally.report(force=True)
        return tally
    client, cluster = _client(scheduler, workers)
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or (workers or 1))
        size = chunk_size or max(1, min(MAX_CHUNK, math.ceil(len(pending) / (4 * n_workers))))
        device = "cpu" if predictor.device.type == "cpu" else "auto"
        args = (
            ref,
            device,
            predictor.batch_size,
            mode,
            str(parts),
            predictor.spec.task.classes,
            mode == "cells",
            str(cam_dir) if cam_dir else None,
            str(cam_root) if cam_root else None,
            options.channels,
        )
        chunks = _chunks(pending, size)
        inflight: list[Any] = []  # distributed futures
        tally.report(force=True)
        while True:
            while len(inflight) < 2 * n_workers:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                inflight.append(client.submit(run_chunk, chunk, *args, pure=False))
            if not inflight:
                break
            if options.should_stop is not None and options.should_stop():
                tally.cancelled = True
                client.cancel(inflight)
                break
            finished = [f for f in inflight if f.done()]
            if not finished:
                time.sleep(0.05)
                continue
            for fut in finished:
                inflight.remove(fut)
                result: ChunkResult = fut.result()  # a task's exception is a bug: raise it
                merge_parts(writer, [Path(result.part)])
                tally.record(
                    result.done,
                    result.errors,
                    result.error_messages,
                    result.last_image,
                    result.warning_messages,
                    result.warnings,
                )
        tally.report(force=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    remove_empty_parts_dir(writer.out)
    return tally


__all__ = ["BatchProgress", "ChunkResult", "run_chunk", "run_dask"]
