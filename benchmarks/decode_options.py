"""Would decoding JPEGs at reduced size (Pillow's ``draft``) be worth what it changes?

On real HPA JPEGs (the class-example composites, 820 px RGB, and the DULoc 4-channel
sets, 1536 px per channel), side by side in one run:

- the CPU time per image of reading and preparing the model's tiles, with the full
  decode that ``read_image`` does and with a draft decode (libjpeg's DCT scaling by
  1/2, 1/4 or 1/8, the largest that keeps the longer side at least the model's
  ``input.fit``), then the same resize;
- the largest change in any probability, and how many images' predicted labels
  change, with the bundled HPA model on torch.

Usage::

    python benchmarks/decode_options.py --n 30

The last line is ``draft_speedup=<full/draft decode time> max_prob_change=<...>``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.sources import find_images
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.registry import default_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared/data"
FOLDERS = {
    "composites": SHARED_DATA / "hpa_class_examples_composite/images",
    "duloc": SHARED_DATA / "hpa_duloc_single_cells/images",
}


@contextmanager
def draft_decoding(fit: int) -> Iterator[None]:
    """Make every JPEG that Pillow opens decode at the smallest DCT scale >= ``fit``."""
    real_open = PIL.Image.open

    def open_drafted(fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        im = real_open(fp, *args, **kwargs)
        if im.format == "JPEG":
            w, h = im.size
            scale = 1
            while scale < 8 and max(w, h) // (2 * scale) >= fit:
                scale *= 2
            if scale > 1:
                im.draft(im.mode, (w // scale, h // scale))
        return im

    PIL.Image.open = open_drafted
    try:
        yield
    finally:
        PIL.Image.open = real_open


def cpu_ms(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    fn()
    return 1000 * (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30, help="images per folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    predictor = Predictor(default_model(), device="cpu", backend="torch")
    fit = int(predictor.spec.input.fit or predictor.spec.input.size)
    print(f"model {predictor.model_id} (fit {fit} px), torch, 1 thread")
    speedups, changes = [], []
    for kind, folder in FOLDERS.items():
        if not folder.is_dir():
            print(f"{kind}: {folder} is missing, skipped")
            continue
        sources = find_images(folder)[: args.n]

        def prepare_all(sources: list[str] = sources) -> None:
            for s in sources:
                predictor.prepare(read_image(s))

        full_ms = draft_ms = 0.0
        for _ in range(2):  # interleaved; the best of each
            f = cpu_ms(prepare_all)
            with draft_decoding(fit):
                d = cpu_ms(prepare_all)
            full_ms = min(full_ms or f, f)
            draft_ms = min(draft_ms or d, d)
        gaps, flips = [], 0
        for s in sources:
            full = predictor.predict_one(read_image(s))
            with draft_decoding(fit):
                drafted = predictor.predict_one(read_image(s))
            gaps.append(float(np.abs(full.probabilities - drafted.probabilities).max()))
            flips += set(full.predicted) != set(drafted.predicted)
        n = len(sources)
        print(
            f"{kind}: {n} real images; read + prepare {full_ms / n:.1f} ms full, "
            f"{draft_ms / n:.1f} ms draft (CPU per image); probability change max "
            f"{max(gaps):.3f}, median {np.median(gaps):.3f}; predicted labels changed on "
            f"{flips} of {n}"
        )
        speedups.append(full_ms / draft_ms)
        changes.append(max(gaps))
    print(f"draft_speedup={min(speedups):.2f} max_prob_change={max(changes):.3f}")


if __name__ == "__main__":
    main()
