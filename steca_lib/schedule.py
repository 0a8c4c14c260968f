"""The optimisation settings of SFT and reinforced training, and learning-rate schedules whose first step trains.

transformers' linear warm-up starts at 0, so the first optimiser step has learning rate 0; a run of one or two
steps (reinforced training on a small set) then ends exactly where it began. Here warm-up step k of W has
``lr · (k + 1) / (W + 1)``: it still rises linearly to the peak over the paper's warm-up share (``warmup_ratio``,
W = ⌈ratio · steps⌉ as in transformers), then stays (``constant_with_warmup``, the paper's RT schedule) or decays
(``cosine``, the paper's SFT schedule; ``linear``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from steca_lib.config import check_config

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class OptimSettings:
    """How a stage trains (a group the SFT and reinforced-training configs compose); the defaults are the paper's
    SFT settings, and a stage config sets its own where they differ."""

    epochs: float = 3.0
    """Passes over the data (paper: SFT 3, reinforced training 1)."""
    learning_rate: float = 2e-5
    """Peak learning rate (paper, 7B: SFT 2e-5, reinforced 3e-6; a small model from scratch needs ~1e-3)."""
    lr_scheduler: str = "cosine"
    """Schedule (:data:`SCHEDULES`; paper: SFT cosine, reinforced constant with warm-up)."""
    warmup_ratio: float = 0.03
    """Warm-up share of the optimiser steps (paper: SFT 0.03, reinforced 0.1); see :func:`lr_factor`."""
    batch_size: int = 16
    """Global batch size (paper: SFT 16, reinforced 15)."""
    per_device_batch_size: int = 0
    """Micro-batch per device; 0 = the whole global batch (gradient accumulation makes up the rest)."""
    max_length: int = 4096
    """Truncation length in tokens (paper: 4096)."""
    bf16: bool | None = None
    """bf16 mixed precision; None = on when a CUDA GPU supports it."""
    logging_steps: int = 5
    """Log the loss every N optimiser steps."""
    save_steps: int = 100
    """Checkpoint every N steps so an interrupted run resumes."""

    def check_optimisation(self) -> None:
        check_config(self, counts=("batch_size", "max_length", "logging_steps", "save_steps"),
                     positive=("epochs", "learning_rate"), non_negative=("per_device_batch_size",),
                     fractions=("warmup_ratio",), choices={"lr_scheduler": SCHEDULES})


def lr_factor(step: int, name: str, warmup: int, total: int) -> float:
    """The multiplier of the peak learning rate at optimiser step ``step`` (0-based) of ``total``."""
    if name == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if name == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if name == "linear":
        return max(0.0, 1.0 - progress)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")


class FirstStepTrains:
    """Mixin for a ``transformers.Trainer``: :func:`lr_factor` replaces the library's schedule of the same name."""

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            from torch.optim.lr_scheduler import LambdaLR

            name = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
            warmup = self.args.get_warmup_steps(num_training_steps)
            self.lr_scheduler = LambdaLR(optimizer or self.optimizer,
                                         partial(lr_factor, name=name, warmup=warmup, total=num_training_steps))
            self._created_lr_scheduler = True
        return self.lr_scheduler
