"""Write a napari-hpa model as a bioimage.io model package (a zip, format 0.5).

The package holds the weights twice: as a ``pytorch_state_dict`` with a self-contained
architecture file (:mod:`.arch_source`, torch only) and as the ONNX graph that the CPU
runtimes already use (:func:`~napari_hpa.core.model.backends.export.onnx_path`); test
tensors that the model itself computed on one tile of a real image; the model card as its
documentation with what the package does not do said in it; a cover (the tile beside its
top class's activation map); and ``model.json`` attached, with the class names and
thresholds in ``config``. The zip is written to a temporary file beside the target and
renamed (:func:`~napari_hpa.core.atomic.atomic_path`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...atomic import atomic_path
from ...image.channels import ChannelMismatchError, adapt_channels
from ...image.data import ImageReadError
from ...image.io import read_image
from ..checkpoint import LoadedModel, ModelSpec, load_model
from ..names import printable
from ..registry import ModelEntry, read_card, resolve_model, sample_data_dir
from ..tiles import pad_to_square, resize
from .arch_source import ARCHITECTURES
from .common import (
    ARCH_FILE,
    CAM_ID,
    META_ATTACHMENT,
    ONNX_FILE,
    OUTPUT_ID,
    STATE_FILE,
    BioimageioError,
    require_bioimageio,
)
from .describe import DEFAULT_AUTHOR, Shapes, build_description, card_licence
from .processing import Step, apply_steps, preprocessing_steps, unsaid_steps

#: The real HPA field the test tile is cut from when no image is given.
SAMPLE_ID = "hpa_57_F11_1"
COVER_SIDE = 256


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_package` wrote: the zip, the model, and its test probabilities."""

    path: Path
    model_id: str
    probabilities: np.ndarray


def check_target(out: Path, overwrite: bool) -> Path:
    """Return ``out`` if a package may be written there, else raise :class:`BioimageioError`."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".zip":
        raise BioimageioError(f"{out}: a bioimage.io package is a .zip file; name it *.zip")
    if out.is_dir():
        raise BioimageioError(f"{out}: is a folder; give a .zip file name")
    if out.exists() and not overwrite:
        raise BioimageioError(f"{out}: already exists; give --overwrite to replace it")
    if not out.parent.is_dir():
        raise BioimageioError(f"{out.parent}: no such folder")
    return out


def export_package(
    model: str | Path | ModelEntry,
    out: str | Path,
    *,
    overwrite: bool = False,
    image: str | Path | None = None,
    authors: list[str] | None = None,
    licence: str | None = None,
) -> ExportResult:
    """Write ``model`` as a bioimage.io package to ``out`` (a ``.zip``) and return what it wrote.

    Parameters
    ----------
    model
        A model name (``name@version``), folder or registry entry.
    out
        The zip to write; an existing file is replaced only with ``overwrite``.
    image
        The image the test tile is cut from (default: the bundled real HPA field).
    authors
        Author names (default: :data:`~.describe.DEFAULT_AUTHOR`).
    licence
        SPDX licence id (default: the data licence the model card names, else BSD-3-Clause).

    Raises
    ------
    BioimageioError
        For a bad target, a missing bioimageio extra, an architecture the package cannot
        rebuild without napari-hpa, or a description bioimageio.spec refuses; one line.
    """
    target = check_target(Path(out), overwrite)
    require_bioimageio()
    entry = model if isinstance(model, ModelEntry) else resolve_model(model)
    loaded = load_model(entry.path)
    spec = loaded.spec
    if spec.arch not in ARCHITECTURES:
        raise BioimageioError(
            f"{entry.path}: architecture {spec.arch!r} cannot be exported to bioimage.io "
            f"(its package must run with torch alone; exportable: {', '.join(ARCHITECTURES)})"
        )
    card = read_card(entry.path).text
    with tempfile.TemporaryDirectory(prefix="napari-hpa-bioimageio-") as tmp:
        root = Path(tmp)
        steps = preprocessing_steps(spec.input)
        probabilities, shapes, top = _write_tensors(loaded, steps, root, image)
        _write_weights(loaded, root)
        _write_cover(root, top, spec)
        _write_documentation(root, spec, card)
        (root / META_ATTACHMENT).write_text(json.dumps(spec.to_dict(), indent=2), "utf-8")
        descr = _describe(spec, root, steps, shapes, authors, licence or card_licence(card))
        _save_zip(descr, target, overwrite)
    return ExportResult(target, spec.id, probabilities)


def _describe(
    spec: ModelSpec,
    root: Path,
    steps: list[Step],
    shapes: Shapes,
    authors: list[str] | None,
    licence: str,
) -> Any:
    from pydantic import ValidationError

    try:
        return build_description(
            spec, root, steps, shapes, authors=authors or [DEFAULT_AUTHOR], licence=licence
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BioimageioError(
            printable(f"{spec.id}: bioimageio.spec refuses {where}: {first.get('msg')}", 400)
        ) from None


def _save_zip(descr: Any, target: Path, overwrite: bool) -> None:
    from bioimageio.spec import save_bioimageio_package

    with atomic_path(target) as tmp:
        try:
            save_bioimageio_package(descr, output_path=tmp)
        except ValueError as exc:
            raise BioimageioError(
                printable(f"{target}: the package did not validate ({exc})", 400)
            ) from None
        if target.exists() and not overwrite:  # appeared while writing: never replace it
            raise BioimageioError(f"{target}: appeared while writing; nothing was replaced")


def _test_image(spec: ModelSpec, image: str | Path | None) -> np.ndarray:
    """Return the raw (C, H, W) planes, in the model's channels, that the test tile comes from."""
    source = Path(image) if image else sample_data_dir() / SAMPLE_ID
    try:
        data = read_image(source)
    except ImageReadError as exc:
        raise BioimageioError(str(exc)) from None
    channels = spec.input.channels
    try:
        return adapt_channels(data.data, data.channel_names, channels, spec.input.optional_channels)
    except ChannelMismatchError:  # e.g. a gray model and an RGB image: its brightest plane
        names = list(data.channel_names)
        plane = data.data[names.index("protein")] if "protein" in names else data.data.max(0)
        return np.repeat(plane[None], len(channels), axis=0).astype(np.float32)


def test_tile(spec: ModelSpec, image: str | Path | None = None) -> np.ndarray:
    """Return the raw test input (1, C, size, size): the centre tile of the resized image."""
    x = _test_image(spec, image)
    if spec.input.pad_square:
        x, _ = pad_to_square(x)
    size = spec.input.size
    h, w = x.shape[1:]
    if spec.input.fit is None:
        target = (size, size)
    else:
        scale = spec.input.fit / max(h, w)
        target = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = resize(x, target)
    y0, x0 = (target[0] - size) // 2, (target[1] - size) // 2
    return np.ascontiguousarray(x[None, :, y0 : y0 + size, x0 : x0 + size], np.float32)


def run_package_model(
    loaded: LoadedModel, steps: list[Step], tile: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return (probabilities (N, K), maps (N, K, h, w)) of a raw tile, as the package computes."""
    x = torch.from_numpy(apply_steps(steps, tile))
    with torch.no_grad():
        logits, cam = loaded.net.eval().forward_with_cam(x)
    probs = torch.sigmoid(logits) if loaded.spec.task.multilabel else torch.softmax(logits, 1)
    return probs.numpy().astype(np.float32), cam.numpy().astype(np.float32)


def _write_tensors(
    loaded: LoadedModel, steps: list[Step], root: Path, image: str | Path | None
) -> tuple[np.ndarray, Shapes, tuple[np.ndarray, np.ndarray, str]]:
    spec = loaded.spec
    tile = test_tile(spec, image)
    probs, cam = run_package_model(loaded, steps, tile)
    np.save(root / "test_input.npy", tile)
    np.save(root / "test_probabilities.npy", probs)
    np.save(root / "test_cam.npy", cam)
    best = int(np.argmax(probs[0]))
    peaks = {OUTPUT_ID: float(probs.max()), CAM_ID: float(cam.max())}
    h, w = cam.shape[2:]
    shapes = Shapes(tile.shape[1], spec.input.size, spec.task.num_classes, (h, w), peaks)
    return probs, shapes, (tile[0], cam[0, best], spec.task.classes[best])


def _write_weights(loaded: LoadedModel, root: Path) -> None:
    from ..backends.export import onnx_path

    state = {k: v.detach().cpu().contiguous() for k, v in loaded.net.state_dict().items()}
    torch.save(state, root / STATE_FILE)
    shutil.copyfile(Path(__file__).with_name("arch_source.py"), root / ARCH_FILE)
    shutil.copyfile(onnx_path(loaded), root / ONNX_FILE)


def _write_cover(root: Path, top: tuple[np.ndarray, np.ndarray, str], spec: ModelSpec) -> None:
    """cover.png (2:1): the test tile as colour beside its top class's activation map."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    tile, cam, name = top
    rgb = np.zeros((3, *tile.shape[1:]), np.float32)
    for c in range(min(3, tile.shape[0])):
        rgb[c] = tile[c]
    if tile.shape[0] == 1:
        rgb[:] = tile[0]
    lo, hi = np.percentile(rgb, [1, 99.8])
    rgb = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
    left = Image.fromarray((rgb.transpose(1, 2, 0) * 255).astype(np.uint8))
    span = float(cam.max() - cam.min())
    heat = (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)
    colours = (colormaps["inferno"](heat)[..., :3] * 255).astype(np.uint8)
    right = Image.fromarray(colours).resize((COVER_SIDE, COVER_SIDE), Image.Resampling.BILINEAR)
    cover = Image.new("RGB", (2 * COVER_SIDE, COVER_SIDE))
    cover.paste(left.resize((COVER_SIDE, COVER_SIDE), Image.Resampling.BILINEAR), (0, 0))
    cover.paste(right, (COVER_SIDE, 0))
    ImageDraw.Draw(cover).text((COVER_SIDE + 6, 6), printable(name, 40), fill=(255, 255, 255))
    cover.save(root / "cover.png")


def _write_documentation(root: Path, spec: ModelSpec, card: str | None) -> None:
    """README.md: the model card, then what the package computes and what it leaves out."""
    steps = "\n".join(f"- {note}" for note in unsaid_steps(spec.input))
    kind = "a sigmoid per class" if spec.task.multilabel else "a softmax over the classes"
    package = f"""

## This bioimage.io package

Exported by napari-hpa from `{spec.id}`. Input `input`: one tile (batch, channel, y, x) of
{spec.input.size} x {spec.input.size} px, channels {", ".join(spec.input.channels)}, raw
intensities; the package's preprocessing does the rest of what napari-hpa does to a tile
(described in `rdf.yaml`). Outputs: `probabilities` ({kind}; the decision thresholds per
class are in `config.napari-hpa.thresholds`) and `cam`, the class-activation maps whose mean
over y and x is the logits. Weights: `pytorch_state_dict` (architecture in `{ARCH_FILE}`,
torch only) and `onnx`.

napari-hpa itself does more than the package says, so its probabilities for a whole image
differ from the package's for one tile. For an image napari-hpa also
{steps}

`napari-hpa import-model` reads this package back into a napari-hpa model folder with
these settings (from the attached `{META_ATTACHMENT}`).
"""
    text = (card or f"# {spec.name}\n\n{spec.description}\n").rstrip() + package
    (root / "README.md").write_text(text, encoding="utf-8")
