"""``napari-hpa batch``: classify a whole screen into a resumable CSV or Parquet table.

Bad images do not stop the run: each gets an error row, the rest of the folder goes
on, and at the end the number of errors and the first messages (one line each, naming
the file) are printed and the exit code is 2, so that a script or a cluster job sees that
some images were not classified. A run whose images all were classified exits 0; so does
a resumed run, which skips the rows already in the table, error rows included. A blank or
saturated image gets a row of status ``warning`` with no predicted class, and a
``warning:`` line naming it; it does not change the exit code. A bad folder or output is
a user error: one line, exit code 2, before any image is read.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.batch.run import BatchError, BatchProgress, BatchSummary, run_batch
from ..core.image.files import long_name
from . import UserError, announce_model, chosen_model, shown
from .options import add_backend_option, add_channels_option, channel_map
from .outputs import check_output_file, check_output_folder, write_failed
from .stopping import StopFlag

if TYPE_CHECKING:
    from ..core.model.preferences import ModelChoice

#: Error messages printed at the end of a run.
SHOW_ERRORS = 5


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "batch",
        help="classify every image in a folder into a CSV/Parquet table (resumable)",
        description="Classify every image under FOLDER (recursively; HPA channel files are "
        "grouped into sets) and append one row per image to --out. Re-running with the same "
        "--out skips the images already there, so an interrupted run just continues. "
        "Images that cannot be read get a row with status 'error' and the run goes on.",
    )
    p.add_argument("folder", nargs="+", metavar="FOLDER", help="folder(s) or image files")
    p.add_argument(
        "--out", type=Path, required=True, help="results table: FILE.csv or FILE.parquet"
    )
    p.add_argument(
        "--model",
        default=None,
        help="model name, name@version or folder (default: the model chosen in napari, "
        "else the bundled one)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per forward pass (default: 4 on the CPU, 32 on a GPU)",
    )
    p.add_argument(
        "--infer",
        choices=["auto", "main", "workers"],
        default="auto",
        help="where the model runs: in each decode worker (auto on a CPU) or in the main "
        "process (auto on a GPU)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the model on the CPU (default: cores / workers per worker; "
        "with --infer main, tuned while running)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode processes (0 = decode in the main process; default: by CPU count and device); "
        "with --dask local: Dask workers",
    )
    p.add_argument(
        "--glob",
        default=None,
        metavar="PATTERN",
        help="only files whose name matches, e.g. '*.tif'",
    )
    p.add_argument("--no-recursive", action="store_true", help="do not walk subfolders")
    add_channels_option(p)
    add_backend_option(p)
    p.add_argument("--cells", action="store_true", help="segment cells and write one row per cell")
    p.add_argument(
        "--cam",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a TIFF of the predicted classes' activation maps per image to DIR",
    )
    scale = p.add_mutually_exclusive_group()
    scale.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDR",
        help="run on a Dask cluster, e.g. tcp://host:8786",
    )
    scale.add_argument(
        "--dask", choices=["local"], default=None, help="run on a Dask LocalCluster on this machine"
    )
    p.add_argument(
        "--chunk-size", type=int, default=None, help="images per Dask task (default: automatic)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


class _Bar:
    """tqdm on stderr fed by the core progress callback (images/s and ETA come from tqdm).

    Its first call also says which model runs (``using <id> (<why>)``): by then the
    folder, the output and the model have passed their checks, so a user error is
    still one line.
    """

    def __init__(self, quiet: bool, choice: ModelChoice | None = None) -> None:
        self.quiet = quiet
        self.choice = choice
        self.bar = None
        self.shown = 0

    def announce(self) -> None:
        """Say which model runs, once."""
        if self.choice is not None:
            announce_model(self.choice)
            self.choice = None

    def __call__(self, p: BatchProgress) -> None:
        self.announce()
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=p.total - p.skipped,
                unit="img",
                file=sys.stderr,
                dynamic_ncols=True,
                desc="batch",
                smoothing=0.1,
            )
        self.bar.update(p.done - self.shown)
        self.shown = p.done
        if p.errors:
            self.bar.set_postfix(errors=p.errors, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(s: BatchSummary) -> None:
    rate = f"{s.rate:.1f} img/s" if s.done else "-"
    state = "cancelled" if s.cancelled else "finished"
    warned = f", {s.warnings} blank or saturated (no class)" if s.warnings else ""
    print(
        f"{state}: {s.done} image(s) in {s.elapsed:.1f} s ({rate}): {s.ok} ok, "
        f"{s.errors} error(s){warned}; {s.skipped} already in {shown(s.path)} (skipped); "
        f"model {shown(s.model)} on {s.backend}"
    )
    for msg in s.warning_messages[:SHOW_ERRORS]:  # each names its image
        print(f"napari-hpa batch: warning: {shown(msg)}", file=sys.stderr)
    if s.warnings > SHOW_ERRORS:
        print(
            f"napari-hpa batch: warning: {s.warnings - SHOW_ERRORS} more blank or saturated "
            f"image(s): their rows in {shown(s.path)} have status 'warning'",
            file=sys.stderr,
        )
    if s.errors:
        print(f"{s.errors} image(s) could not be classified; first messages:", file=sys.stderr)
        for msg in s.error_messages[:SHOW_ERRORS]:  # they may quote model.json's channels
            print(f"  {shown(msg)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa batch``; return the exit code."""
    for folder in args.folder:
        if not str(folder).strip():  # Path("") is ".": an unset shell variable would batch cwd
            raise UserError("an empty path was given (an unset shell variable?)")
        too_long = long_name(folder)
        if too_long:
            raise UserError(f"{folder}: {too_long}")
        if not os.path.exists(folder) and not os.path.isdir(Path(folder).parent):
            raise UserError(f"{folder}: no such folder or image")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise UserError("--workers must be 0 or more")
    # the output before the model and the images: a bad one is one line, at once
    check_output_file(args.out.expanduser(), (".csv", ".parquet"), create=False)
    if args.cam is not None:
        check_output_folder(args.cam.expanduser(), "--cam")
    scheduler = args.scheduler or ("local" if args.dask else None)
    choice = chosen_model(args.model)
    mapping = channel_map(args.channels, choice.entry.spec.input.channels)
    bar = _Bar(args.quiet, choice)
    # Ctrl-C stops at the next image: the table is synced and the pool shut down cleanly.
    # SIGTERM keeps its default (the rows on disk are whole; the workers follow the main).
    with StopFlag(signals=(signal.SIGINT,)) as interrupted:
        try:
            summary = run_batch(
                args.folder,
                args.out,
                choice.entry,
                device=args.device,
                backend=args.backend,
                batch_size=args.batch_size,
                threads=args.threads,
                infer=args.infer,
                workers=args.workers,
                cells=args.cells,
                cam_dir=args.cam,
                glob=args.glob,
                recursive=not args.no_recursive,
                scheduler=scheduler,
                chunk_size=args.chunk_size,
                channels=mapping,
                progress=bar,
                should_stop=interrupted,
            )
        except BatchError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:  # the disk filled up, or the folder became read-only, meanwhile
            raise write_failed(args.out, exc) from None
        finally:
            bar.close()
    bar.announce()  # a run with nothing left to do sends no progress
    _report(summary)
    if interrupted.stopped:
        raise KeyboardInterrupt  # main() prints "interrupted" and exits 130, as before
    return 2 if summary.errors else 0
