"""A corpus of bad inputs, generated at test time (no binaries are committed).

Each :class:`BadInput` is one *kind* of bad (or merely awkward) input: a file,
an HPA channel set, a label CSV or a model folder, with what every path that
takes it must do: ``"error"`` (refuse with one message naming the file and the
problem, ``problem`` being a substring of that message) or ``"ok"`` (a valid
edge case that must work, with finite results).

``build_corpus(root)`` writes them all under ``root``:

* ``root/images``: every image and HPA-set kind plus two good images, in one
  folder, so a batch over it meets all of them (and a symlink loop);
* ``root/labels``: a folder of four small images and one CSV per label kind;
* ``root/models/<kind>``: one broken model folder per model kind.

Why generated: a corrupt file in the repository would be a binary nobody can
review, and most kinds (permissions, symlink loops) cannot be committed at all.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
import torch
from PIL import Image

from napari_hpa.core.image.writers import write_hpa_set, write_image
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import InputSpec, ModelSpec, save_model
from napari_hpa.core.tasks import get_task, make_task

Category = Literal["image", "hpa_set", "labels", "model"]
Expect = Literal["error", "ok"]

#: The classes of the corpus's own RGB model (and its label CSVs, via --task hpa28).
RGB_CHANNELS = ("red", "green", "blue")
#: Side of the "huge" image: 10^8 pixels, under the reader's per-plane limit, so it
#: must be read and downscaled, not refused.
HUGE_SIDE = 10_000
#: Side a TIFF header claims for the "huge header" kind (10^10 pixels, never allocated).
HEADER_SIDE = 100_000


@dataclass(frozen=True)
class BadInput:
    """One kind of bad input and what must happen to it.

    ``path`` is what a user would pass: a file, an HPA ``<folder>/<id>``, a CSV,
    or a model folder. ``problem`` is a lower-case substring the error message
    must contain (``expect == "error"``). ``extra`` carries what a path needs
    besides ``path`` (e.g. a label CSV's image folder and task).
    """

    kind: str
    category: Category
    path: Path
    expect: Expect
    problem: str = ""
    what: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


# ----------------------------------------------------------------------------- helpers
def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def _rgb(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _huge_header_tiff(path: Path, side: int) -> Path:
    """A valid little-endian TIFF header claiming ``side`` x ``side`` 8-bit pixels, no data."""
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, side),  # ImageWidth
        (257, 4, 1, side),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, side),  # RowsPerStrip
        (279, 4, 1, 0xFFFFFFFF),  # StripByteCounts (a lie: the data is not there)
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 16) + b"\0" * 8 + ifd)
    return path


class _Trap:
    """Unpickling this creates ``marker``: proof that a loader ran code from a model file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def rgb_spec(name: str = "corpus-rgb", version: int = 1, width: int = 4) -> ModelSpec:
    """A tiny RGB multilabel model spec (percentile normalisation: the all-zero case)."""
    task = make_task(list(get_task("hpa28").classes[:4]), "multilabel", RGB_CHANNELS, "rgb4")
    return ModelSpec(
        name=name,
        version=version,
        arch="small_cnn",
        arch_kwargs={"width": width, "depth": 2},
        task=task,
        input=InputSpec(channels=list(RGB_CHANNELS), size=32, normalize="percentile"),
    )


def write_rgb_model(root: Path, name: str = "corpus-rgb", width: int = 4, seed: int = 0) -> Path:
    """Write the corpus's working RGB model to ``root`` and return its folder."""
    spec = rgb_spec(name, width=width)
    torch.manual_seed(seed)
    net = build_model(spec.arch, 3, spec.task.num_classes, **spec.arch_kwargs)
    return save_model(net, spec, root)


# ----------------------------------------------------------------------------- kinds
def _images(d: Path, rng: np.random.Generator) -> list[BadInput]:
    d.mkdir(parents=True, exist_ok=True)
    out: list[BadInput] = []

    def add(kind: str, path: Path, expect: Expect, problem: str, what: str, **extra: Any) -> None:
        out.append(BadInput(kind, "image", path, expect, problem, what, extra))

    (d / "empty.png").write_bytes(b"")
    add("empty_file", d / "empty.png", "error", "empty", "a 0-byte .png")

    good = d / "good_rgb.png"
    _png(good, _rgb(rng, 64))
    blob = good.read_bytes()
    (d / "truncated.png").write_bytes(blob[: len(blob) // 2])
    add("truncated_png", d / "truncated.png", "error", "truncated", "a PNG cut in half")

    tif = d / "full.tiff"
    tifffile.imwrite(tif, rng.integers(0, 65535, (3, 64, 64), dtype=np.uint16))
    (d / "truncated.tif").write_bytes(tif.read_bytes()[:400])
    tif.unlink()
    add("truncated_tiff", d / "truncated.tif", "error", "truncated", "a TIFF cut after 400 B")

    (d / "notes.png").write_text("these are my notes, not an image\n", encoding="utf-8")
    add("text_as_png", d / "notes.png", "error", "not an image", "a text file named .png")

    _png(d / "one_pixel.png", np.array([[[200, 10, 30]]], np.uint8))
    add("pixels_1x1", d / "one_pixel.png", "ok", "", "a 1x1 RGB PNG (resized to the model)")

    _png(d / "huge.png", np.zeros((HUGE_SIDE, HUGE_SIDE), np.uint8))  # ~100 kB on disk
    add("huge_10000", d / "huge.png", "ok", "", "a 10000x10000 gray PNG (10^8 px, downscaled)")

    _huge_header_tiff(d / "huge_header.tif", HEADER_SIDE)
    add(
        "huge_header",
        d / "huge_header.tif",
        "error",
        "too large",
        "a TIFF header claiming 100000x100000 px (refused before decoding)",
    )

    _png(d / "all_zero.png", np.zeros((40, 40, 3), np.uint8))
    add("all_zero", d / "all_zero.png", "ok", "", "an all-black RGB image (no NaN out)")

    nan = rng.random((2, 32, 32)).astype(np.float32)
    nan[0, 3, 4] = np.nan
    tifffile.imwrite(d / "nan.tif", nan)
    add("nan_float", d / "nan.tif", "error", "nan", "a float32 TIFF with a NaN")

    inf = rng.random((32, 32)).astype(np.float32) * 1000
    inf[5, 5] = np.inf
    tifffile.imwrite(d / "inf.tif", inf)
    add("inf_float", d / "inf.tif", "error", "infinite", "a float32 TIFF with +Inf")

    tifffile.imwrite(d / "complex.tif", (rng.random((32, 32)) + 1j).astype(np.complex64))
    add("complex_dtype", d / "complex.tif", "error", "unsupported pixel type", "a complex64 TIFF")

    tifffile.imwrite(d / "mask.tif", rng.random((32, 32)) > 0.5)
    add("bool_pixels", d / "mask.tif", "ok", "", "a bool (1-bit) TIFF, read as 0/1")

    _png(d / "Zelle_ß_细胞_é.png", _rgb(rng))
    add("unicode_name", d / "Zelle_ß_细胞_é.png", "ok", "", "a file name in three scripts")

    _png(d / "my cell image 1.png", _rgb(rng))
    add("spaces_name", d / "my cell image 1.png", "ok", "", "a file name with spaces")

    write_hpa_set(d, "Zelle 2 ß细胞", rng.random((4, 48, 48)))
    add(
        "hpa_unicode_spaces",
        d / "Zelle 2 ß细胞",
        "ok",
        "",
        "an HPA set whose id has spaces and non-ASCII letters",
    )

    (d / "loop").symlink_to(".", target_is_directory=True)  # a folder that contains itself
    (d / "loop_a.png").symlink_to("loop_b.png")
    (d / "loop_b.png").symlink_to("loop_a.png")
    add(
        "symlink_loop",
        d / "loop_a.png",
        "error",
        "symbolic link",
        "two .png symlinks pointing at each other, and a folder symlink to itself",
    )

    locked = _png(d / "locked.png", _rgb(rng))
    locked.chmod(0)
    add("unreadable_file", locked, "error", "permission denied", "a PNG with mode 000")
    return out


def _hpa_sets(d: Path, rng: np.random.Generator) -> list[BadInput]:
    out = []
    paths = write_hpa_set(d, "nocolor", rng.random((4, 48, 48)))
    paths[3].unlink()  # no yellow: ER is optional, so it reads as 3 channels
    out.append(
        BadInput(
            "hpa_no_yellow",
            "hpa_set",
            d / "nocolor",
            "ok",
            "",
            "an HPA set without its _yellow file (read as microtubules, protein, nucleus)",
        )
    )
    paths = write_hpa_set(d, "noprotein", rng.random((4, 48, 48)))
    paths[1].unlink()  # no green: the protein every HPA model classifies
    out.append(
        BadInput(
            "hpa_no_protein",
            "hpa_set",
            d / "noprotein",
            "error",
            "no protein channel",
            "an HPA set without its _green (protein) file",
        )
    )
    write_hpa_set(d, "mixed", rng.random((4, 48, 48)))
    write_image(d / "mixed_blue.png", rng.random((1, 40, 52)))
    out.append(
        BadInput(
            "hpa_size_mismatch",
            "hpa_set",
            d / "mixed",
            "error",
            "different sizes",
            "an HPA set whose blue channel is 40x52, the others 48x48",
        )
    )
    write_hpa_set(d, "good_set", rng.random((4, 48, 48)))
    return out


def _labels(d: Path, rng: np.random.Generator) -> list[BadInput]:
    data = d / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in "abcd":
        _png(data / f"{name}.png", _rgb(rng, 24))
    csvs = {
        "labels_unknown_class": (
            "Id,Target\na,0\nb,99\nc,1\nd,2\n",
            "error",
            "class id 99",
            "a class id (99) that task hpa28 does not have",
        ),
        "labels_unknown_name": (
            "Id,Target\na,Nucleoplasm\nb,Flux capacitor\nc,Nucleoli\n",
            "error",
            "unknown class 'flux'",
            "a class name hpa28 does not have",
        ),
        "labels_duplicate_ids": (
            "Id,Target\na,0\nb,1\na,2\nc,0\n",
            "error",
            "more than once",
            "the Id 'a' twice, with different targets",
        ),
        "labels_empty_target": (
            "Id,Target\na,\nb,\nc,\n",
            "error",
            "no row names a class",
            "every Target empty",
        ),
        "labels_some_empty_target": (
            "Id,Target\na,0\nb,\nc,1 2\nd,0\n",
            "ok",
            "",
            "one empty Target: 'no class' (a negative) in multilabel",
        ),
    }
    out = []
    for kind, (text, expect, problem, what) in csvs.items():
        path = d / f"{kind}.csv"
        path.write_text(text, encoding="utf-8")
        out.append(
            BadInput(kind, "labels", path, expect, problem, what, {"data": data, "task": "hpa28"})
        )
    return out


def _models(d: Path, marker: Path) -> list[BadInput]:
    out = []

    def broken(kind: str, problem: str, what: str) -> Path:
        folder = write_rgb_model(d / kind, name=f"broken-{kind.replace('_', '-')}")
        out.append(BadInput(kind, "model", folder, "error", problem, what))
        return folder

    f = broken(
        "model_missing_fields",
        "missing field(s): arch, task",
        "model.json without 'arch' and 'task'",
    )
    meta = json.loads((f / "model.json").read_text())
    del meta["arch"], meta["task"]
    (f / "model.json").write_text(json.dumps(meta))

    f = broken(
        "model_json_channels_disagree", "disagree", "model.json: input has 3 channels, the task 4"
    )
    meta = json.loads((f / "model.json").read_text())
    meta["task"]["channels"] = ["microtubules", "protein", "nucleus", "er"]
    (f / "model.json").write_text(json.dumps(meta))

    f = broken(
        "model_wrong_channel_count",
        "do not fit",
        "model.json says 4 channels (HPA), the weights were trained on 3",
    )
    meta = json.loads((f / "model.json").read_text())
    hpa = ["microtubules", "protein", "nucleus", "er"]
    meta["task"]["channels"] = hpa
    meta["input"].update(channels=hpa, mean=[0.0] * 4, std=[1.0] * 4)
    (f / "model.json").write_text(json.dumps(meta))

    f = broken(
        "model_weights_wrong_shape",
        "do not fit",
        "weights of a wider network (width 8) than model.json says (4)",
    )
    other = write_rgb_model(d / "_wide", width=8)
    (f / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())

    f = broken(
        "model_pickle_weights",
        "pickle",
        "a pickle (that would create a file if unpickled) named model.safetensors",
    )
    (f / "model.safetensors").write_bytes(pickle.dumps({"net": _Trap(str(marker))}, protocol=4))

    f = broken(
        "model_truncated_weights", "not a valid safetensors", "model.safetensors cut in half"
    )
    blob = (f / "model.safetensors").read_bytes()
    (f / "model.safetensors").write_bytes(blob[: len(blob) // 2])

    f = broken("model_json_invalid", "not readable json", "model.json that is not JSON")
    (f / "model.json").write_text('{"name": "half', encoding="utf-8")
    return out


def build_corpus(root: str | os.PathLike) -> list[BadInput]:
    """Write every kind under ``root`` and return them (images, HPA sets, labels, models).

    ``root/models/pickle_ran`` is the file the disguised pickle would create:
    if it ever exists, a loader unpickled a model file.
    """
    root = Path(root)
    rng = np.random.default_rng(9)
    images = root / "images"
    kinds = _images(images, rng)
    kinds += _hpa_sets(images, rng)
    kinds += _labels(root / "labels", rng)
    kinds += _models(root / "models", root / "models" / "pickle_ran")
    names = [k.kind for k in kinds]
    assert names == [k for k, _ in KINDS], "KINDS must list every kind, in order"
    return kinds


#: Every kind and its category, known before the corpus is written (test ids).
KINDS: tuple[tuple[str, Category], ...] = (
    *(
        (k, "image")
        for k in (
            "empty_file",
            "truncated_png",
            "truncated_tiff",
            "text_as_png",
            "pixels_1x1",
            "huge_10000",
            "huge_header",
            "all_zero",
            "nan_float",
            "inf_float",
            "complex_dtype",
            "bool_pixels",
            "unicode_name",
            "spaces_name",
            "hpa_unicode_spaces",
            "symlink_loop",
            "unreadable_file",
        )
    ),
    ("hpa_no_yellow", "hpa_set"),
    ("hpa_no_protein", "hpa_set"),
    ("hpa_size_mismatch", "hpa_set"),
    *(
        (k, "labels")
        for k in (
            "labels_unknown_class",
            "labels_unknown_name",
            "labels_duplicate_ids",
            "labels_empty_target",
            "labels_some_empty_target",
        )
    ),
    *(
        (k, "model")
        for k in (
            "model_missing_fields",
            "model_json_channels_disagree",
            "model_wrong_channel_count",
            "model_weights_wrong_shape",
            "model_pickle_weights",
            "model_truncated_weights",
            "model_json_invalid",
        )
    ),
)


#: The good inputs ``build_corpus`` puts next to the bad ones in ``root/images``.
GOOD_IMAGES = ("good_rgb.png", "good_set")
