"""``napari-hpa predict``: classify images and print or save the probabilities."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from ..core.image.channels import ChannelMismatchError
from ..core.image.io import ImageReadError, read_image
from ..core.image.sources import find_images
from ..core.model.checkpoint import CheckpointError
from ..core.model.predict import Prediction, Predictor
from . import UserError, announce_model, chosen_model


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
    p.set_defaults(run=run)


def replace_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Write ``out`` through a temporary file in its folder and a rename.

    An interrupted run (Ctrl-C, a full disk, a kill) leaves the previous file or
    none, never half a table that a script would read as complete.
    """
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(predictions: list[Prediction], out: Path) -> None:
    """One row per image: image, model, one probability column per class, predicted."""
    replace_atomically(out, lambda tmp: _write_csv(predictions, tmp))


def _write_csv(predictions: list[Prediction], out: Path) -> None:
    classes = predictions[0].classes if predictions else ()
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "model", *classes, "predicted"])
        for p in predictions:
            writer.writerow(
                [
                    p.source,
                    p.model_id,
                    *(f"{v:.6f}" for v in p.probabilities),
                    " ".join(str(i) for i in p.predicted),
                ]
            )


def write_json(predictions: list[Prediction], out: Path, errors: list[str]) -> None:
    """``{"results": [...], "errors": [...]}``: the errors travel with the results."""
    payload = {"results": [p.to_dict() for p in predictions], "errors": errors}
    text = json.dumps(payload, indent=2)
    replace_atomically(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _save_cams(pred: Prediction, folder: Path) -> Path:
    import numpy as np
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Path(pred.image_id).name}_cam.tif"
    names = [pred.classes[c] for c in pred.cams]
    stack = np.stack(list(pred.cams.values())).astype(np.float32)
    replace_atomically(
        path,
        lambda tmp: tifffile.imwrite(
            tmp, stack, metadata={"axes": "CYX", "Labels": names}, imagej=False
        ),
    )
    return path


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa predict``; return the exit code."""
    if args.out is not None and args.out.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"{args.out}: --out must end in .csv or .json")
    errors: list[str] = []
    sources: list[str] = []
    for path in args.paths:
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
    for message in errors:
        print(f"napari-hpa predict: error: {message}", file=sys.stderr)
    if not sources:
        return 2
    choice = chosen_model(args.model)
    try:
        predictor = Predictor(choice.entry, device=args.device, batch_size=args.batch_size)
    except (LookupError, CheckpointError, ValueError) as exc:
        raise UserError(str(exc)) from None
    announce_model(choice)
    predictions: list[Prediction] = []
    cam_dir = (args.out.parent / f"{args.out.stem}_cams") if args.out else Path("cams")
    for source in sources:
        try:
            image = read_image(source)
            pred = predictor.predict_one(image, cam_classes="predicted" if args.cam else None)
        except (ImageReadError, ChannelMismatchError) as exc:
            message = str(exc) if isinstance(exc, ImageReadError) else f"{source}: {exc}"
            errors.append(message)
            print(f"napari-hpa predict: error: {message}", file=sys.stderr)
            continue
        predictions.append(pred)
        if args.cam and pred.cams:
            _save_cams(pred, cam_dir)
        if args.out is None:
            top = ", ".join(f"{name} {p:.2f}" for name, p in pred.top(args.top))
            print(f"{pred.source}\t[{', '.join(pred.predicted_names)}]\t{top}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix.lower() == ".csv":
            write_csv(predictions, args.out)
        else:
            write_json(predictions, args.out, errors)
        print(f"wrote {len(predictions)} result(s) with {predictor.model_id} to {args.out}")
    return 2 if errors else 0
