"""Time loading a model and predicting one image on the CPU.

Usage: ``python benchmarks/bundled/time_predict.py MODEL IMAGE``
"""

from __future__ import annotations

import sys
import time

import torch


def main(model: str, image: str) -> None:
    torch.set_num_threads(2)
    from napari_hpa.core.image.io import read_image
    from napari_hpa.core.model.predict import Predictor

    t0 = time.perf_counter()
    pred = Predictor(model, device="cpu")
    t1 = time.perf_counter()
    img = read_image(image)
    t2 = time.perf_counter()
    pred.predict_one(img)
    t3 = time.perf_counter()
    print(f"load {t1 - t0:.2f}s read {t2 - t1:.2f}s predict {t3 - t2:.2f}s total {t3 - t0:.2f}s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
