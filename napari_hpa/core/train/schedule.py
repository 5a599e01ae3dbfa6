"""Learning-rate schedules for one training phase, and fitting one into a time limit.

A run with ``--max-minutes`` does not know in advance how many epochs it will
finish. Cutting a one-cycle schedule at the time limit leaves the network at a
high learning rate, which scores worse than a shorter run that ends annealed. So
:class:`PhaseSchedule` is re-fitted every epoch to the epochs that still fit:
from then on the scheduler moves ``rate`` positions per batch, and its last
position falls on the last batch that fits. It never moves back; a changed
estimate only changes its speed.
"""

from __future__ import annotations

import math

import torch


def make_scheduler(
    opt: torch.optim.Optimizer, kind: str, lr: float, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle (``kind="onecycle"``) or warm-up + cosine over ``steps`` optimizer steps."""
    steps = max(1, steps)
    # OneCycleLR divides by (pct_start * steps - 1): too few steps make that zero,
    # so very short phases use the warm-up + cosine schedule below instead.
    if kind == "onecycle" and steps >= 8:
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=steps, pct_start=0.25, div_factor=10, final_div_factor=100
        )
    warm = max(1, steps // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        # The last step (steps - 1) is the floor, so a schedule always ends annealed.
        done = min(1.0, (step - warm) / max(1, steps - 1 - warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * done))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class PhaseSchedule:
    """The schedule of one phase (head only, or all layers) of ``epochs`` epochs.

    Parameters
    ----------
    opt, kind, lr
        As for :func:`make_scheduler`.
    start_epoch
        The run's epoch (0-based) at which the phase begins.
    epochs
        The phase's length when no time limit shortens it.
    batches_per_epoch
        Optimizer steps per epoch.
    """

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        kind: str,
        lr: float,
        start_epoch: int,
        epochs: int,
        batches_per_epoch: int,
    ) -> None:
        self.start, self.epochs, self.batches = start_epoch, epochs, max(1, batches_per_epoch)
        self.sched = make_scheduler(opt, kind, lr, self.total + 1)
        self.steps = 0  # optimizer steps taken in this phase
        self.pos0, self.step0, self.rate = 0, 0, 1.0

    @property
    def total(self) -> int:
        """The scheduler's last position."""
        return self.epochs * self.batches

    def fit(self, epoch: int, epochs_left: int | None) -> None:
        """Fit the rest of the phase into ``epochs_left`` more epochs (None: no limit)."""
        if epochs_left is None:
            return
        done = epoch - self.start
        left = (min(self.epochs, done + max(1, epochs_left)) - done) * self.batches
        self.pos0, self.step0 = self.sched.last_epoch, self.steps
        self.rate = max(1.0, (self.total - self.pos0) / left)

    def step(self) -> None:
        """One scheduler step, or a jump to where the fitted schedule should be."""
        self.steps += 1
        if self.rate > 1.0:
            target = min(self.total, self.pos0 + round((self.steps - self.step0) * self.rate))
            self.sched.last_epoch = max(self.sched.last_epoch, target - 1)
        if self.sched.last_epoch < self.total:  # at the end it stays there (OneCycleLR raises)
            self.sched.step()

    def at_end(self) -> bool:
        """Tell whether the schedule has reached its last position (early only when time-fitted)."""
        return self.sched.last_epoch >= self.total
