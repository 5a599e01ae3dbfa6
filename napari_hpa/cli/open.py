"""``napari-hpa open``: start napari with the Predict and Annotate panels and an image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import UserError, announce_model, chosen_model

SAMPLES = ("real_hpa", "synthetic_0", "synthetic_1")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``open`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "open",
        help="open napari with the napari-hpa panels and an image (default: a sample)",
        description="Start napari with the Predict and Annotate panels docked and PATH "
        "loaded (an HPA channel set <folder>/<id> or one of its files, a folder, a TIFF, "
        "PNG or JPEG); without PATH the bundled real HPA field is shown.",
    )
    p.add_argument("path", nargs="?", default=None, metavar="PATH", help="image to open")
    p.add_argument(
        "--model",
        default=None,
        help="model to select in Predict: name, name@version or folder (default: the "
        "model chosen in napari, else the bundled one)",
    )
    p.add_argument(
        "--sample",
        choices=SAMPLES,
        default=SAMPLES[0],
        help="sample shown when no PATH is given (default: %(default)s)",
    )
    p.set_defaults(run=run)


def _check(path: str | None, model: str | None) -> Any:
    """Fail early (before napari starts) on a missing path or an unknown model."""
    from ..core.image.sources import is_hpa_source
    from ..core.model.checkpoint import CheckpointError
    from ..core.model.registry import resolve_model

    if path is not None and not Path(path).expanduser().exists() and not is_hpa_source(path):
        raise UserError(f"{path}: no such file, folder or HPA image id")
    if model is None:
        return None
    try:
        return resolve_model(model)
    except (LookupError, CheckpointError) as exc:
        raise UserError(str(exc)) from None


def setup_viewer(
    viewer: Any, path: str | None = None, model: str | None = None, sample: str = SAMPLES[0]
) -> tuple[Any, Any]:
    """Load the image and dock Predict and Annotate (tabbed) in ``viewer``.

    Returns
    -------
    (PredictWidget, AnnotateWidget)
    """
    entry = _check(path, model)
    if path is not None:
        from .._reader import openable_path

        viewer.open(openable_path(path), plugin="napari-hpa")
    else:
        viewer.open_sample("napari-hpa", sample)
    predict_dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate", tabify=True)
    from qtpy.QtCore import QTimer

    predict_dock.raise_()  # show Predict first; Annotate is one tab away
    QTimer.singleShot(0, predict_dock.raise_)
    if entry is not None:
        predict.select_model(entry)
    return predict, annotate


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa open``; return the exit code."""
    _check(args.path, args.model)
    announce_model(chosen_model(args.model))  # the model Predict starts with: the same rule
    import napari

    viewer = napari.Viewer(title="napari-hpa")
    setup_viewer(viewer, args.path, args.model, args.sample)
    napari.run()
    return 0
