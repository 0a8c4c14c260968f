"""Success rates with bootstrap confidence intervals, so that methods and seeds can be compared honestly."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_boot: int = 10_000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile-bootstrap ``1 - alpha`` interval: ``(mean, low, high)``."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(low), float(high)
