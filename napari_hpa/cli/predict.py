"""``napari-hpa predict``: classify images and print or save the probabilities."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

from ..core.atomic import atomic_open, write_text
from ..core.image.channels import ChannelMismatchError, apply_channel_map
from ..core.image.exposure import exposure_problem
from ..core.image.io import ImageReadError, read_image
from ..core.image.sources import find_images
from ..core.image.writers import write_maps
from ..core.model.checkpoint import CheckpointError
from ..core.model.predict import Predictor
from ..core.model.prediction import NonFiniteOutput, Prediction
from . import UserError, announce_model, chosen_model, shown
from .options import add_backend_option, add_channels_option, channel_map
from .outputs import check_output_file, check_output_folder, reporting_writes


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "predict",
        help="classify images (files, HPA ids or folders)",
        description="Classify images and print, or write as CSV/JSON, the per-class "
        "probabilities and the predicted labels. PATH may be image files, HPA ids "
        "(<folder>/<id> of <id>_red.png ...) or folders.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, HPA ids or folders")
    p.add_argument(
        "--model",
        default=None,
        help="model name, name@version or folder (default: the model chosen in napari "
        "with Use this model / Roll back, else the bundled HPA model)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--out", type=Path, default=None, help="write results to FILE.csv or FILE.json")
    p.add_argument(
        "--cam",
        action="store_true",
        help="also save class-activation maps of the predicted classes as TIFF",
    )
    p.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
    p.add_argument("--batch-size", type=int, default=8)
    add_channels_option(p)
    add_backend_option(p)
    p.set_defaults(run=run)


def write_csv(predictions: list[Prediction], out: Path, cams: dict[str, str] | None = None) -> None:
    """One row per image: image, model, one probability column per class, predicted.

    With ``cams`` (``--cam``), a last ``cam`` column names each image's map file.
    Written through a temporary file and a rename: an interrupted run leaves the
    previous file or none, never half a table that a script would read as complete.
    """
    classes = predictions[0].classes if predictions else ()
    with atomic_open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "model", *classes, "predicted", *(["cam"] if cams else [])])
        for p in predictions:
            writer.writerow(
                [
                    p.source,
                    p.model_id,
                    *(f"{v:.6f}" for v in p.probabilities),
                    " ".join(str(i) for i in p.predicted),
                    *([cams.get(p.source, "")] if cams else []),
                ]
            )


def write_json(
    predictions: list[Prediction],
    out: Path,
    errors: list[str],
    warnings: dict[str, str] | None = None,
    cams: dict[str, str] | None = None,
) -> None:
    """``{"results": [...], "errors": [...]}``: the errors travel with the results.

    A result has a ``warning`` (a blank or saturated image) and a ``cam`` (its map
    file) where they apply.
    """
    results = []
    for p in predictions:
        row = p.to_dict()
        if warnings and p.source in warnings:
            row["warning"] = warnings[p.source]
        if cams and p.source in cams:
            row["cam"] = cams[p.source]
        results.append(row)
    write_text(out, json.dumps({"results": results, "errors": errors}, indent=2))


def _save_cams(pred: Prediction, folder: Path) -> Path:
    """Save the predicted classes' maps of one image, in a file no other image's maps use."""
    import numpy as np

    names = [pred.classes[c] for c in pred.cams]
    stack = np.stack(list(pred.cams.values())).astype(np.float32)
    return write_maps(folder, Path(pred.image_id).name, pred.source, stack, names)


def _sources(paths: list[str], errors: list[str]) -> list[str]:
    """List the images named by ``paths``; a path that names none is an error line."""
    sources: list[str] = []
    for path in paths:
        if not str(path).strip():  # Path("") is ".": an unset shell variable would predict cwd
            errors.append("an empty path was given (an unset shell variable?)")
            continue
        try:
            found = find_images([path])
        except ImageReadError as exc:
            errors.append(str(exc))
            continue
        if not found:
            errors.append(f"{path}: no images found here")
        sources += [s for s in found if s not in sources]
    return sources


def _no_answer(pred: Prediction, warning: str | None) -> Prediction:
    """Drop the predicted classes of a blank or saturated image: they would mean nothing."""
    return dataclasses.replace(pred, predicted=[]) if warning else pred


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa predict``; return the exit code."""
    if args.out is not None:
        check_output_file(args.out, (".csv", ".json"))
    cam_dir = (args.out.parent / f"{args.out.stem}_cams") if args.out else Path("cams")
    if args.cam:
        check_output_folder(cam_dir, "--cam")
    errors: list[str] = []
    sources = _sources(args.paths, errors)
    for message in errors:
        print(f"napari-hpa predict: error: {shown(message)}", file=sys.stderr)
    if not sources:
        return 2
    choice = chosen_model(args.model)
    try:
        predictor = Predictor(
            choice.entry, device=args.device, batch_size=args.batch_size, backend=args.backend
        )
    except (LookupError, CheckpointError, ValueError) as exc:
        raise UserError(str(exc)) from None
    mapping = channel_map(args.channels, predictor.spec.input.channels)
    announce_model(choice)
    predictions: list[Prediction] = []
    warnings: dict[str, str] = {}
    cams: dict[str, str] = {}
    for source in sources:
        try:
            image = apply_channel_map(read_image(source), mapping)
            pred = predictor.predict_one(image, cam_classes="predicted" if args.cam else None)
        except (ImageReadError, ChannelMismatchError, NonFiniteOutput) as exc:
            message = str(exc) if isinstance(exc, ImageReadError) else f"{source}: {exc}"
            errors.append(message)
            print(f"napari-hpa predict: error: {shown(message)}", file=sys.stderr)
            continue
        warning = exposure_problem(image.data, image.channel_names, predictor.spec.input.invert)
        if warning:
            warnings[pred.source] = warning
            print(f"napari-hpa predict: warning: {shown(pred.source)}: {warning}", file=sys.stderr)
        pred = _no_answer(pred, warning)
        predictions.append(pred)
        if args.cam and pred.cams and not warning:  # no answer, no map of it
            with reporting_writes(cam_dir):
                cams[pred.source] = str(_save_cams(pred, cam_dir))
        if args.out is None:  # class names come from model.json, a source from a file name
            if warning:
                print(f"{shown(pred.source)}\t[]\tno answer: {warning}")
                continue
            top = ", ".join(f"{shown(name)} {p:.2f}" for name, p in pred.top(args.top))
            predicted = ", ".join(shown(name) for name in pred.predicted_names)
            print(f"{shown(pred.source)}\t[{predicted}]\t{top}")
    if args.out is not None:
        with reporting_writes(args.out):
            if args.out.suffix.lower() == ".csv":
                write_csv(predictions, args.out, cams if args.cam else None)
            else:
                write_json(predictions, args.out, errors, warnings, cams)
        print(f"wrote {len(predictions)} result(s) with {predictor.model_id} to {shown(args.out)}")
    return 2 if errors else 0
