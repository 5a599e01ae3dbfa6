"""Training throughput (images/s) of the small CNN and a torchvision backbone, side by side.

Two numbers per architecture:

* ``engine``: images/s of the real training loop (``core.train.fit``: cached
  synthetic HPA images, random crops, D4 + jitter, AdamW, AMP on CUDA),
  training part of each epoch only (validation excluded), first epoch skipped
  as warm-up;
* ``model``: forward + backward + step on random tensors of the same shape,
  the ceiling the input pipeline could reach, in the channels-last layout that
  training uses; ``NCHW/NHWC`` is the same loop in the default layout, measured
  in turns with it (best of 3 each), divided by it: below 1 means channels-last
  is faster (the reason ``core.train`` uses it).

Usage::

    python benchmarks/train_speed.py [--size 128] [--images 192] [--epochs 3]
        [--batch-size 32] [--archs small_cnn,mobilenet_v3_small] [--device auto]
        [--threads N] [--workers 0]
        [--variant small_cnn:width=24,pool=avgmax,stem_stride=2 ...]

``--variant ARCH:KEY=VALUE,...`` (repeatable) adds a row for an architecture
with keywords, e.g. two small_cnn recipes side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"small_cnn:width=16,stage1_stride=1"`` -> ("small_cnn", {"width": 16, ...})."""
    arch, _, rest = text.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else value
    return arch, kwargs


def model_only(
    arch: str,
    size: int,
    batch: int,
    device: torch.device,
    steps: int = 8,
    nhwc: bool = True,
    kwargs: dict[str, Any] | None = None,
) -> float:
    from napari_hpa.core.model.architectures import build_model

    layout = torch.channels_last if nhwc else torch.contiguous_format
    torch.manual_seed(0)
    net = build_model(arch, 4, 28, **(kwargs or {})).to(device, memory_format=layout).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 4, size, size, device=device).contiguous(memory_format=layout)
    y = (torch.rand(batch, 28, device=device) < 0.1).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = net(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    step()
    step()
    if amp:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if amp:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def engine(
    arch: str, data, args: argparse.Namespace, kwargs: dict[str, Any] | None = None
) -> tuple[float, int]:
    from napari_hpa.core.train.loop import TrainConfig, fit

    cfg = TrainConfig(name=f"speed-{arch}", arch=arch, arch_kwargs=dict(kwargs or {}),
                      size=args.size, epochs=args.epochs,
                      batch_size=args.batch_size, val_fraction=0.1, patience=0,
                      workers=args.workers, device=args.device)  # fmt: skip
    result = fit(cfg, data)
    timed = result.history[1:] or result.history
    seconds = sum(h["train_seconds"] for h in timed)
    n_params = sum(p.numel() for p in result.net.parameters())
    return result.n_train * len(timed) / seconds, n_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--archs", default="small_cnn,mobilenet_v3_small")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[], help="ARCH:KEY=VALUE,...")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from napari_hpa.core.image.synth import write_samples
    from napari_hpa.core.model.device import choose_device
    from napari_hpa.core.train.data import load_csv

    device = choose_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_samples(Path(tmp), n=args.images, size=args.size, seed=1)
        data = load_csv(folder, folder / "labels.csv", "hpa28")
        print(f"device={device} threads={torch.get_num_threads()} size={args.size} "
              f"batch={args.batch_size} images={args.images} workers={args.workers}")  # fmt: skip
        print(f"{'arch':<22}{'params':>10}{'engine img/s':>15}{'model img/s':>14}{'NCHW/NHWC':>11}")
        rows = [(a, {}) for a in filter(None, args.archs.split(","))]
        rows += [parse_variant(v) for v in args.variant]
        for arch, kwargs in rows:
            label = arch + "".join(f" {k}={v}" for k, v in kwargs.items())
            rate, n_params = engine(arch, data, args, kwargs)
            rates: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(3):  # in turns, so that load from elsewhere hits both alike
                for nhwc in (True, False):
                    one = model_only(
                        arch, args.size, args.batch_size, device, nhwc=nhwc, kwargs=kwargs
                    )
                    rates[nhwc].append(one)
            ceiling, ratio = max(rates[True]), max(rates[False]) / max(rates[True])
            print(f"{label}\n{'':<22}{n_params:>10,}{rate:>15.1f}{ceiling:>14.1f}{ratio:>11.2f}")
            print(f"train_images_per_s[{label}]={rate:.1f} nchw_over_nhwc[{label}]={ratio:.2f}")


if __name__ == "__main__":
    main()
