"""Time loading a model and predicting one image on the CPU, with and without its views.

Usage: ``python benchmarks/bundled/time_predict.py MODEL IMAGE [--rounds 3]``

Each round times ``Predictor(model)``, ``read_image`` and ``predict_one`` with the
model's own ``input.views``, then ``predict_one`` again with the views off, side by side;
the last line is ``views_vs_none=<ratio of the median predict times>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    from napari_hpa.core.image.io import read_image
    from napari_hpa.core.model.checkpoint import load_model
    from napari_hpa.core.model.predict import Predictor
    from napari_hpa.core.model.registry import resolve_model

    folder = resolve_model(args.model).path
    with_views, without = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        pred = Predictor(load_model(folder), device="cpu")
        t1 = time.perf_counter()
        img = read_image(args.image)
        t2 = time.perf_counter()
        top = pred.predict_one(img).top(1)[0]
        t3 = time.perf_counter()
        views = pred.spec.input.views
        pred.spec.input.views = "none"
        pred.predict_one(img)
        t4 = time.perf_counter()
        with_views.append(t3 - t2)
        without.append(t4 - t3)
        print(
            f"round {r + 1}: load {t1 - t0:.2f}s read {t2 - t1:.2f}s predict ({views} views) "
            f"{t3 - t2:.2f}s total {t3 - t0:.2f}s; predict without views {t4 - t3:.2f}s; "
            f"top {top[0]} {top[1]:.3f}"
        )
    ratio = statistics.median(with_views) / statistics.median(without)
    print(f"views_vs_none={ratio:.2f}")


if __name__ == "__main__":
    main()
