"""How the bundled HPA model is fitted: head only, the last blocks, or the whole network.

EfficientNet-Lite0 is cut in two at block ``SPLIT``: the *trunk* (stem and blocks
0-14, ImageNet weights) and the *top* (block 15, the last, and the 1280-d head conv).
The trunk's outputs of every training input are computed once (192 x 5 x 5 each), so
the two cheap recipes train on them (on 2 shared CPU cores, training blocks 12-15
instead took 7x longer per step):

* ``head``: the top stays frozen too, a linear head on the pooled 1280-d features;
* ``last_blocks``: the top and the head train (AdamW, cosine, batch norm frozen),
  starting from the ``head`` result;
* ``staged``: then the whole network unfreezes at a tenth of the rate, on the raw
  input tiles, for a time budget (2 CPU cores: about a pass over the data).

Samples are weighted so that every (source, class) pair weighs the same in the loss
(class-balanced), and cells and image crops weigh the same in total.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_hpa.core.model.architectures import ClassifierNet
from napari_hpa.core.model.architectures.efficientnet_lite import pretrained_backbone

from .sources import SEED, K

SPLIT = 15
RECIPES = ("head", "last_blocks", "staged")


@dataclass
class Samples:
    """Training inputs and what they are: trunk outputs, targets, weights, owners."""

    trunk: torch.Tensor  # (N, 192, 5, 5)
    y: torch.Tensor  # (N, K)
    w: torch.Tensor  # (N,)
    owner: np.ndarray  # (N,) item index
    raw: np.ndarray | None = None  # (N, 4, S, S) float16 input tiles, for ``staged``

    def subset(self, keep: np.ndarray) -> Samples:
        sel = torch.from_numpy(np.flatnonzero(keep))
        raw = None if self.raw is None else self.raw[keep]
        return Samples(self.trunk[sel], self.y[sel], self.w[sel], self.owner[keep], raw)


def make_net(er_live: bool) -> ClassifierNet:
    """The ImageNet start with a 4-channel stem (ER filters zeroed unless ``er_live``)."""
    net = pretrained_backbone(4, K, dropout=0.2)
    if not er_live:
        with torch.no_grad():
            net.backbone.conv_stem.weight[:, 3] = 0.0
    return net.eval()


def trunk(net: ClassifierNet, x: torch.Tensor) -> torch.Tensor:
    b = net.backbone
    x = b.act(b.bn0(b.conv_stem(x)))
    for block in b.blocks[:SPLIT]:
        x = block(x)
    return x


def top_features(net: ClassifierNet, t: torch.Tensor) -> torch.Tensor:
    """Pooled 1280-d features from trunk outputs."""
    b = net.backbone
    for block in b.blocks[SPLIT:]:
        t = block(t)
    return b.act(b.bn1(b.conv_head(t))).mean(dim=(2, 3))


@torch.no_grad()
def trunk_outputs(net: ClassifierNet, x: np.ndarray, batch: int = 64) -> torch.Tensor:
    net.eval()
    out = [
        trunk(net, torch.from_numpy(np.asarray(x[i : i + batch], np.float32)))
        for i in range(0, len(x), batch)
    ]
    return torch.cat(out) if out else torch.zeros((0, 192, 5, 5))


@torch.no_grad()
def pooled(net: ClassifierNet, t: torch.Tensor, batch: int = 256) -> torch.Tensor:
    net.eval()
    return torch.cat([top_features(net, t[i : i + batch]) for i in range(0, len(t), batch)])


def balanced_weights(y: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Every (group, primary class) pair weighs the same; each group weighs the same."""
    primary = y.argmax(1)
    w = np.zeros(len(y), np.float32)
    groups = np.unique(group)
    for g in groups:
        in_g = group == g
        classes = np.unique(primary[in_g])
        for c in classes:
            sel = in_g & (primary == c)
            w[sel] = 1.0 / (sel.sum() * len(classes) * len(groups))
    return w * len(y)


def train_head(feats: torch.Tensor, s: Samples, epochs: int = 60) -> nn.Linear:
    """Weighted multilabel logistic regression on frozen pooled features."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    mu, sd = feats.mean(0), feats.std(0) + 1e-3
    xs = (feats - mu) / sd
    lin = nn.Linear(feats.shape[1], K)
    drop = nn.Dropout(0.3)
    steps = epochs * int(np.ceil(len(xs) / 128))
    opt = torch.optim.AdamW(lin.parameters(), lr=3e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=gen)
        for i in range(0, len(xs), 128):
            idx = order[i : i + 128]
            loss = F.binary_cross_entropy_with_logits(
                lin(drop(xs[idx])), s.y[idx], reduction="none"
            )
            loss = (loss.mean(1) * s.w[idx]).sum() / s.w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    head = nn.Linear(feats.shape[1], K)
    with torch.no_grad():  # fold the standardisation in: W (x - mu) / sd + b
        head.weight.copy_(lin.weight / sd)
        head.bias.copy_(lin.bias - (lin.weight * mu / sd).sum(1))
    return head


def _freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def train_top(net: ClassifierNet, s: Samples, epochs: int = 4, lr: float = 5e-4) -> None:
    """Train blocks[SPLIT:], the head conv and the head on cached trunk outputs (in place)."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    b = net.backbone
    top = [*b.blocks[SPLIT:], b.conv_head, b.bn1]
    params = [p for m in top for p in m.parameters()]
    opt = torch.optim.AdamW(
        [{"params": params, "lr": lr}, {"params": net.head.parameters(), "lr": 4 * lr}],
        weight_decay=1e-2,
    )
    batch = 64
    steps = epochs * int(np.ceil(len(s.y) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[lr, 4 * lr], total_steps=steps, pct_start=0.15
    )
    net.train()
    _freeze_bn(net)
    for _ in range(epochs):
        order = torch.randperm(len(s.y), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            logits = net.head(net.dropout(top_features(net, s.trunk[idx])))
            loss = F.binary_cross_entropy_with_logits(logits, s.y[idx], reduction="none")
            loss = (loss.mean(1) * s.w[idx]).sum() / s.w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()


def train_whole(
    net: ClassifierNet, s: Samples, budget_s: float, lr: float = 5e-5
) -> dict[str, float]:
    """Staged unfreezing, last stage: every layer trains on the raw tiles, for ``budget_s``."""
    assert s.raw is not None
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    opt = torch.optim.AdamW(
        [
            {"params": net.backbone.parameters(), "lr": lr},
            {"params": net.head.parameters(), "lr": 4 * lr},
        ],
        weight_decay=1e-2,
    )
    net.train()
    _freeze_bn(net)
    t0, seen, batch = time.time(), 0, 32
    probs = s.w.numpy() / s.w.numpy().sum()
    while time.time() - t0 < budget_s:
        frac = (time.time() - t0) / budget_s
        for g, base in zip(opt.param_groups, (lr, 4 * lr), strict=True):
            g["lr"] = base * 0.5 * (1 + np.cos(np.pi * frac))
        idx = rng.choice(len(s.y), size=batch, p=probs)  # class-balanced sampling
        x = torch.from_numpy(s.raw[idx].astype(np.float32))
        loss = F.binary_cross_entropy_with_logits(net(x), s.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += batch
    net.eval()
    return {"seconds": round(time.time() - t0), "samples": seen, "passes": seen / len(s.y)}
