"""Train or fine-tune a classifier and write it as a new model version.

One function, :func:`train_model`, is what the CLI, the Retrain widget, the
hyperparameter search and the tests all call, so they cannot drift apart.
Progress goes to a callback as small dicts (the ``--progress jsonl`` events);
``should_stop`` is polled every batch so that cancelling is quick, and a
stopped run still writes its best epoch.

Choices and why:

* multilabel: BCE-with-logits with a per-class ``pos_weight`` (negatives /
  positives, clipped) because HPA classes range from common to very rare;
  multiclass: cross-entropy with clipped inverse-frequency class weights;
* AdamW with one-cycle (default) or warm-up + cosine schedule; with a time
  limit the schedule is fitted to the epochs that the time allows (re-estimated
  every epoch from the epochs' duration; :mod:`~napari_hpa.core.train.schedule`), so a
  time-limited run ends annealed after its last whole epoch instead of being cut;
* fine-tuning trains the (possibly new) head alone for ``freeze_epochs``, then
  everything at ``lr * finetune_lr_factor``, so a random head cannot wreck
  pretrained features;
* the best epoch by validation macro F1 is kept (early stopping on patience);
  per-class thresholds are tuned on validation to maximise F1;
* a non-finite loss or weights (too high a learning rate) stop the run with the
  status ``diverged``; the best finite epoch before it is kept, if there is one,
  and nothing is written otherwise (never a "completed" model of NaNs);
* validation runs through :class:`~napari_hpa.core.model.predict.Predictor`, the one
  inference path, on the same tiles prediction uses.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..model.architectures.base import ClassifierNet
from ..model.checkpoint import LoadedModel, check_free_space, model_bytes
from ..model.device import choose_device, is_oom
from ..model.metrics import binary_log_loss, evaluate, log_loss, tune_thresholds
from ..model.predict import Predictor
from .augment import (
    ImageCache,
    TrainDataset,
    channel_stats,
    make_cache,
    make_loader,
    preload,
    validation_tiles,
)
from .averaging import WeightAverage
from .config import TrainConfig, TrainingOutOfMemory, TrainResult, done_event
from .data import DataError, TrainData, data_fingerprint, split, targets_matrix
from .precision import MIN_SPEEDUP, bf16_speedup, resolve_precision
from .report import output_folder, save_result
from .schedule import PhaseSchedule
from .setup import make_loss, setup_model

Progress = Callable[[dict[str, Any]], None]
ShouldStop = Callable[[], bool]


class _Stop(Exception):
    def __init__(self, status: str, reason: str = "") -> None:
        self.status = status
        self.reason = reason


#: Non-finite batch losses in a row that end a run whose weights are still finite (with
#: mixed precision the scaler skips an overflowing step, and the run may recover).
MAX_NONFINITE_BATCHES = 3


def _finite_weights(net: nn.Module) -> bool:
    return all(
        bool(torch.isfinite(t).all()) for t in net.state_dict().values() if t.is_floating_point()
    )


def _workers(config: TrainConfig, n_items: int) -> int:
    """DataLoader workers: as configured, else none for tiny data or two cores, else up to 4."""
    if config.workers is not None:
        return max(0, int(config.workers))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if n_items < 512 or (cpus or 1) <= 2 else min(4, (cpus or 1) - 1)


# ----------------------------------------------------------------------------- training
class _Run:
    """One training run's state, split into steps so that each reads on its own."""

    #: Safety factor on the estimated epoch duration when fitting epochs into the time limit.
    TIME_MARGIN = 1.05
    #: The moving average of the weights (``TrainConfig.weight_average``), set by prepare().
    average: WeightAverage | None = None
    #: time.monotonic() of the last batch event, set by run().
    last_event: float

    def __init__(
        self,
        config: TrainConfig,
        data: TrainData,
        emit: Progress,
        stop: Callable[[], None],
        deadline: float | None = None,
        check_room: Callable[[nn.Module], None] | None = None,
    ):
        self.config, self.data, self.emit, self.stop = config, data, emit, stop
        self.check_room = check_room
        self.deadline = deadline  # time.monotonic() value of the time limit, or None
        self.epoch_seconds: list[float] = []  # training + validation time per epoch
        self.t0 = time.monotonic()
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        self.device = choose_device(config.device)
        self.net, self.spec, self.info = setup_model(config, data.task)
        self.task = self.spec.task
        self.train_s, self.val_s = split(data, config.val_fraction, config.seed)
        self.mask_db = data.mask_db
        if not self.train_s or not self.val_s:
            raise DataError(
                f"need at least 2 labelled images (one to validate on), got {len(data.samples)}"
            )
        self.fingerprint = data_fingerprint(list(self.train_s) + list(self.val_s))
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.use_amp = config.amp and self.device.type == "cuda"
        self.precision = resolve_precision(config.precision, self.device)
        self.micro = 0  # images per forward pass; 0 = the whole batch (until a GPU OOM)
        freeze = config.freeze_epochs
        if freeze is None:
            freeze = 1 if config.base or config.pretrained else 0
        self.freeze = min(max(0, freeze), config.epochs - 1)

    def prepare(self, cache: ImageCache | None) -> None:
        """Load and cache images, fit input statistics, build the loader, loss and predictor."""
        cfg, spec = self.config, self.spec.input
        if self.check_room is not None:  # before the first image is decoded
            self.check_room(self.net)
        if cache is None:
            cache = make_cache(spec, cfg.augment.crop_scale[0], cfg.cache_mb * 2**20, self.mask_db)
        self.train_s = preload(self.train_s, cache, self.emit, self.stop)
        if not self.train_s:
            raise DataError("no readable training image")
        if not cfg.base:  # a new model normalises with its own data's statistics
            spec.mean, spec.std = channel_stats(
                [cache.get(s.source)[0] for s in self.train_s[:200]]
            )
        k = self.task.num_classes
        y_train = targets_matrix(self.train_s, k)
        sources = [s.source for s in self.train_s]
        aug, crops = cfg.augment, cfg.crops_per_image
        dataset = TrainDataset(sources, y_train, cache, spec, aug, crops, cfg.seed)
        self.tiles, bad = validation_tiles(self.val_s, spec, self.emit, self.stop, self.mask_db)
        self.val_s = [s for i, s in enumerate(self.val_s) if i not in set(bad)]
        if not self.val_s:
            raise DataError("no readable validation image")
        self.y_val = targets_matrix(self.val_s, k)
        self.loader, self.sampler = make_loader(
            dataset,
            cfg.batch_size,
            _workers(cfg, len(dataset)),
            pin_memory=self.device.type == "cuda",
        )
        self.criterion = make_loss(self.task, y_train, cfg.pos_weight_max).to(self.device)
        # NHWC: oneDNN's and cuDNN's faster convolutions (on 2 CPU cores, 1.2-1.5x the
        # training img/s of small_cnn and the mobile backbones; docs/benchmarks.md)
        # (torch's stubs lack the device + memory_format overload that Module.to accepts)
        self.net.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        if cfg.precision == "auto" and self.precision == "bf16":
            # native bf16 is not faster for every network: time this one both ways
            probe = (min(cfg.batch_size, 16), len(spec.channels), spec.size, spec.size)
            try:
                gain = bf16_speedup(self.net, probe)
            except Exception:  # noqa: BLE001 - a timing that fails decides nothing: fp32
                gain = 0.0
            self.info["bf16_speedup"] = round(gain, 2)
            if gain < MIN_SPEEDUP:
                self.precision = "fp32"
        self.average = WeightAverage(self.net, cfg.weight_average) if cfg.weight_average else None
        # the network that is validated and kept: the weight average, or the live one
        # (the average is a deep copy of the live ClassifierNet)
        self.eval_net = cast(ClassifierNet, self.average.net if self.average else self.net)
        model, batch = LoadedModel(self.spec, self.eval_net, None), max(8, cfg.batch_size)
        self.predictor = Predictor(model, device=self.device, batch_size=batch, amp=cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def start_phase(self, epoch: int) -> None:
        """Head only before ``freeze``, then all layers (at a lower rate when fine-tuning)."""
        cfg = self.config
        head_only = epoch < self.freeze
        for p in self.net.backbone_parameters():
            p.requires_grad_(not head_only)
        params = self.net.head_parameters() if head_only else list(self.net.parameters())
        from_weights = cfg.base or cfg.pretrained  # a trained backbone learns gently
        lr = cfg.lr if head_only or not from_weights else cfg.lr * cfg.finetune_lr_factor
        epochs = self.freeze if head_only else cfg.epochs - self.freeze
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        self.schedule = PhaseSchedule(self.opt, cfg.schedule, lr, epoch, epochs, len(self.loader))
        self.bad_epochs = 0

    def epochs_that_fit(self) -> int | None:
        """Count the whole epochs (with validation) that still fit before the time limit.

        None without a limit or before the first epoch has been timed.
        """
        if self.deadline is None or not self.epoch_seconds:
            return None
        recent = self.epoch_seconds[-3:]
        per_epoch = self.TIME_MARGIN * sum(recent) / len(recent)
        return int((self.deadline - time.monotonic()) // max(per_epoch, 1e-9))

    def schedule_done(self) -> bool:
        """Tell whether the last phase's schedule has ended (early only when time-fitted)."""
        sch = self.schedule
        return sch.start + sch.epochs >= self.config.epochs and sch.at_end()

    def train_epoch(self, epoch: int) -> float:
        self.net.train()
        if epoch < self.freeze:
            self.net.backbone.eval()  # frozen: keep the parent's batch-norm statistics
        elif self.config.freeze_bn:
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()  # normalise with the running statistics; do not update them
        self.sampler.set_epoch(epoch)
        total, count, n_batches = 0.0, 0, len(self.loader)
        nonfinite = 0
        for b, (x, y) in enumerate(self.loader):
            self.stop()
            value = self.step(x, y)
            if not math.isfinite(value):
                nonfinite += 1
                if nonfinite >= MAX_NONFINITE_BATCHES or not _finite_weights(self.net):
                    raise _Stop("diverged", self._diverged(f"the loss became {value}", epoch, b))
                continue
            nonfinite = 0
            total, count = total + value * len(x), count + len(x)
            now = time.monotonic()
            if now - self.last_event >= 1.0 / self.config.batch_events_per_s or b + 1 == n_batches:
                self.last_event = now
                pos = {"epoch": epoch + 1, "batch": b + 1, "n_batches": n_batches}
                self.emit({"event": "batch", **pos, "loss": round(value, 5)})
        return total / max(count, 1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimizer step; returns the batch's mean loss.

        On out-of-memory (CUDA's, or any allocator's that says so) the batch is
        split into micro-batches whose gradients add up to the whole batch's
        (one update, the same schedule), halving until it fits; a warning event
        says so. If not even one image fits, :class:`TrainingOutOfMemory` says
        what to do instead of a CUDA traceback.
        """
        while True:
            size = min(self.micro or len(x), len(x))
            try:
                return self._accumulate(x, y, size)
            except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is one
                if not is_oom(exc):
                    raise
                self.opt.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if size <= 1:
                    raise TrainingOutOfMemory(
                        f"{self.device.type.upper()} out of memory even with one image per "
                        "step; train on the CPU (--device cpu), with a smaller --size, or a "
                        "smaller architecture"
                    ) from None
                self.micro = max(1, size // 2)
                message = (
                    f"{self.device.type.upper()} out of memory with {size} images per step; "
                    f"continuing with micro-batches of {self.micro} (same batch of {len(x)})"
                )
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                self.emit({"event": "warning", "message": message})

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor, size: int) -> float:
        """Forward/backward in chunks of ``size``, then one optimizer step."""
        self.opt.zero_grad(set_to_none=True)
        n, total = len(x), 0.0
        for i in range(0, n, size):
            xb = x[i : i + size].to(
                self.device, non_blocking=True, memory_format=torch.channels_last
            )
            yb = y[i : i + size].to(self.device, non_blocking=True)
            with self._autocast():
                logits = self.net(xb)
            loss = self.criterion(logits.float(), yb if self.task.multilabel else yb.argmax(1))
            self.scaler.scale(loss * (len(xb) / n) if size < n else loss).backward()
            total += float(loss.detach()) * len(xb)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.schedule.step()
        if self.average:
            self.average.update(self.net)
        return total / max(n, 1)

    @property
    def computed_in(self) -> str:
        """Return what the forward pass computes in, as the events and model.json say it."""
        return "fp16" if self.use_amp else self.precision

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Return the forward pass's autocast: float16 on CUDA, bf16 on a CPU that has it."""
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _diverged(self, what: str, epoch: int, batch: int | None = None) -> str:
        where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "")
        kept = (
            f"; kept epoch {self.best['epoch']}, the best before it"
            if self.best
            else "; no epoch had finished with finite weights"
        )
        return (
            f"training diverged: {what} at {where} (learning rate {self.config.lr:g}); "
            f"try a learning rate 10 times lower{kept}"
        )

    def validate(self, epoch: int, train_loss: float) -> dict[str, Any]:
        """Score the epoch on validation; remember it if it is the best so far.

        Weights or validation outputs that are not finite end the run
        (``diverged``) instead of being scored: they are never the best epoch.
        """
        task, y = self.task, self.y_val
        self.eval_net.eval()  # Predictor does not switch modes; batch norm must not adapt
        if not math.isfinite(train_loss):
            raise _Stop("diverged", self._diverged(f"the loss became {train_loss}", epoch))
        if not _finite_weights(self.eval_net):
            raise _Stop("diverged", self._diverged("the weights became NaN or infinite", epoch))
        probs = self.predictor.predict_prepared(self.tiles)
        if not np.isfinite(probs).all():
            raise _Stop("diverged", self._diverged("the outputs became NaN", epoch))
        if self.predictor.device != self.device:
            # Validation ran out of GPU memory and fell back to the CPU, taking the
            # shared network along: training goes on where the optimizer's state is.
            self.emit({"event": "warning", "message": "validation ran on the CPU (GPU OOM)"})
            self.eval_net.to(self.device)
            self.predictor.device = self.device
        k = task.num_classes
        if task.multilabel:
            thr = tune_thresholds(y, probs, prior_weight=self.config.threshold_prior)
        else:
            thr = np.full(k, 0.5)
        m = evaluate(task.kind, y, probs, thr, task.classes)
        ll = binary_log_loss(y, probs) if task.multilabel else log_loss(y.argmax(1), probs)
        lr = round(float(self.opt.param_groups[0]["lr"]), 8)
        losses = {"train_loss": round(train_loss, 5), "val_loss": round(ll, 5)}
        row = {"epoch": epoch + 1, **losses, "val_macro_f1": m["macro_f1"], "lr": lr}
        row["train_seconds"] = round(self.train_seconds, 3)  # the training part (throughput)
        if not task.multilabel:
            row["val_accuracy"] = m["accuracy"]
        self.history.append(row)
        best = self.best
        better = not best or m["macro_f1"] > best["metrics"]["macro_f1"] + 1e-9
        tie = best and abs(m["macro_f1"] - best["metrics"]["macro_f1"]) <= 1e-9
        if better or (tie and ll < best["val_loss"]):
            state = {n: v.detach().cpu().clone() for n, v in self.eval_net.state_dict().items()}
            self.best = {"epoch": epoch + 1, "metrics": m, "val_loss": ll, "probs": probs}
            self.best.update(thresholds=thr, state=state)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return row

    def run(self) -> str:
        cfg = self.config
        n = {"n_train": len(self.train_s), "n_val": len(self.val_s), "n_batches": len(self.loader)}
        about = {"device": str(self.device), "task": self.task.name, "name": cfg.name}
        about["precision"] = self.computed_in
        classes = list(self.task.classes)
        self.emit({"event": "start", "total_epochs": cfg.epochs, **n, **about, "classes": classes})
        self.last_event = 0.0
        for epoch in range(cfg.epochs):
            if epoch in (0, self.freeze):
                self.start_phase(epoch)
            self.schedule.fit(epoch, self.epochs_that_fit())
            t_epoch = time.monotonic()
            train_loss = self.train_epoch(epoch)
            self.train_seconds = time.monotonic() - t_epoch
            self.stop()
            row = self.validate(epoch, train_loss)
            self.epoch_seconds.append(time.monotonic() - t_epoch)
            elapsed = time.monotonic() - self.t0
            eta = elapsed / (epoch + 1) * (cfg.epochs - epoch - 1)
            if self.deadline is not None:  # the time limit ends the run first
                eta = min(eta, max(0.0, self.deadline - time.monotonic()))
            timing = {"elapsed_s": round(elapsed, 2), "eta_s": round(eta, 2)}
            self.emit({"event": "epoch", **row, "best_epoch": self.best["epoch"], **timing})
            if cfg.patience and self.bad_epochs >= cfg.patience:
                return "early_stopping"
            if epoch + 1 < cfg.epochs and (self.epochs_that_fit() == 0 or self.schedule_done()):
                return "time_limit"  # the next epoch would be cut: stop at the annealed one
        return "completed"

    def result(self, status: str, reason: str = "") -> TrainResult:
        """Return the best epoch's network (on the CPU) and numbers; no network if none finished."""
        duration = round(time.monotonic() - self.t0, 2)
        extra: dict[str, Any] = {"info": self.info, "device": str(self.device)}
        extra["precision"] = self.computed_in
        extra["duration_s"] = duration
        if reason:
            extra["stop_reason"] = reason
        res = TrainResult(
            status,
            history=self.history,
            n_train=len(self.train_s),
            n_val=len(self.val_s),
            fingerprint=self.fingerprint,
            extra=extra,
        )
        if self.best:
            best = self.best
            self.net.load_state_dict(best["state"])
            self.net.to("cpu").eval()
            self.spec.thresholds = [float(t) for t in best["thresholds"]]
            note = "validation split (also used for early stopping and the thresholds)"
            res.metrics = {**best["metrics"], "evaluated_on": note, "best_epoch": best["epoch"]}
            res.spec, res.net, res.best_epoch = self.spec, self.net, best["epoch"]
            res.val_targets, res.val_probs = self.y_val, best["probs"]
        return res


def fit(
    config: TrainConfig,
    data: TrainData,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    *,
    cache: ImageCache | None = None,
    check_room: Callable[[nn.Module], None] | None = None,
) -> TrainResult:
    """Train in memory; return the best epoch's network and metrics (nothing is written).

    ``cache`` lets several runs on the same data and input spec (search trials)
    share decoded images. ``check_room(net)`` runs once the network is built and
    before any image is decoded (e.g. to check that the disk can hold the model).
    A run that diverges has status ``diverged`` and says why in
    ``extra["stop_reason"]``.
    """
    emit = progress or (lambda event: None)
    deadline = time.monotonic() + 60 * config.max_minutes if config.max_minutes else None

    def stop() -> None:
        if should_stop is not None and should_stop():
            raise _Stop("cancelled")
        if deadline is not None and time.monotonic() > deadline:
            raise _Stop("time_limit")

    run = _Run(config, data, emit, stop, deadline, check_room)
    reason = ""
    try:
        run.prepare(cache)
        status = run.run()
    except _Stop as s:
        status, reason = s.status, s.reason
    return run.result(status, reason)


def train_model(
    config: TrainConfig,
    data: TrainData,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TrainResult:
    """Train (or fine-tune), save the best epoch as a new version, emit ``done``.

    The model name and the output folder are checked first, and the free space
    once the network is built, before any image is decoded: a problem there is a
    one-line :class:`~napari_hpa.core.model.checkpoint.CheckpointError` before
    the run, not after it. A run stopped by ``should_stop``, the time limit or a
    divergence still saves its best completed epoch; if no epoch completed,
    nothing is written (``path`` None).
    """
    root = output_folder(config)

    def check_room(net: nn.Module) -> None:
        check_free_space(root, model_bytes(net, config.half))

    result = fit(config, data, progress, should_stop, check_room=check_room)
    if result.net is not None:
        save_result(result, config, data, root=root)
    if progress is not None:
        progress(done_event(result))
    return result
