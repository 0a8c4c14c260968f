"""Learning-rate schedules whose first optimiser step already trains.

transformers' linear warm-up starts at 0, so the first optimiser step has learning rate 0; a run of one or two
steps (reinforced training on a small set) then ends exactly where it began. Here warm-up step k of W has
``lr · (k + 1) / (W + 1)``: it still rises linearly to the peak over the paper's warm-up share (``warmup_ratio``,
W = ⌈ratio · steps⌉ as in transformers), then stays (``constant_with_warmup``, the paper's RT schedule) or decays
(``cosine``, the paper's SFT schedule; ``linear``).
"""

from __future__ import annotations

import math
from functools import partial

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


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
