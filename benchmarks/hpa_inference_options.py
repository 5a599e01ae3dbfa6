"""Would test-time flips or another cell-context weight help the HPA model? Validation only.

Usage::

    python benchmarks/hpa_inference_options.py   # ~25 min on 2 CPU cores

Rebuilds the ``head`` recipe of ``benchmarks/bundled/hpa`` on each of its 3
cross-validation folds of the *training* items (the held-out images are never
read) and scores the validation items with no flips, 4 flips and the 8 D4 views,
at cell-context weights 0, 0.25, 0.5 and 0.75. Prints one line per option and
writes ``$NAPARI_HPA_CACHE/inference_options.json``. A finding for the next model
version: the Predictor does not flip yet.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
from bundled.common import CACHE, log, setup_torch
from bundled.hpa import fit as F
from bundled.hpa import inputs as I
from bundled.hpa import recipe as R
from bundled.hpa.scoring import eval_inputs, figures, headline
from bundled.hpa.sources import load_items, split

setup_torch(2, 0)
items = load_items()
train, held = split(items)
t = time.time()
preps = [
    I.prepare(it) if i in set(train) else I.Prepared(np.zeros((4, 1, 1)), [])
    for i, it in enumerate(items)
]
evs = {i: eval_inputs(items[i]) for i in train}
log(f"prepared in {time.time() - t:.0f}s")
folds = R.folds_of(items, train)
net0 = F.make_net(True)
s = R.build_samples(net0, items, preps, train, True, keep_raw=False)
log(f"{len(s.y)} samples")
fits = R.Fits({True: s}, folds, 0)


def views(x, mode):
    out = [x]
    if mode in ("flip4", "d4"):
        out += [x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1]]
    if mode == "d4":
        xt = np.swapaxes(x, -1, -2)
        out += [xt, xt[..., ::-1], xt[..., ::-1, :], xt[..., ::-1, ::-1]]
    return [np.ascontiguousarray(v) for v in out]


@torch.no_grad()
def probs_of(net, x, mode):
    if len(x) == 0:
        return np.zeros((0, 28), np.float32)
    ps = [torch.sigmoid(net(torch.from_numpy(v))).numpy() for v in views(x, mode)]
    return np.mean(ps, 0)


res = {}
modes = ("none", "flip4", "d4")
P = {m: {} for m in modes}
for f, fold in enumerate(folds):
    net = fits.get("head", True, f).eval()
    for i in fold:
        for m in modes:
            P[m][i] = (probs_of(net, evs[i].tiles, m).mean(0), probs_of(net, evs[i].cells, m))
    log(f"fold {f} done")
idx = [i for f in folds for i in f]
thr = np.full(28, 0.5, np.float32)
for m in modes:
    for w in (0.0, 0.25, 0.5, 0.75):
        probs = np.stack([P[m][i][0] for i in idx])
        cells = [(1 - w) * P[m][i][1] + w * P[m][i][0][None] for i in idx]
        h = headline(figures(items, idx, probs, cells, thr))
        res[f"{m}/ctx{w}"] = h
        print(
            m,
            w,
            {
                k: round(v, 3)
                for k, v in h.items()
                if k
                in (
                    "composite_top1",
                    "composite_top3",
                    "duloc_set_top1",
                    "duloc_cell_top1",
                    "duloc_cell_top3",
                    "kaggle_macro_auroc",
                )
            },
            flush=True,
        )
CACHE.mkdir(parents=True, exist_ok=True)
(CACHE / "inference_options.json").write_text(json.dumps(res, indent=1))
