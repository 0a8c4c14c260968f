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


#: Two-sided 95% Student-t quantiles t_{0.975, df}; beyond the table the normal 1.96 is close enough.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}


def seed_ci(values, bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float, float]:
    """Mean over seeds and its 95% Student-t interval ``(mean, low, high)``, clipped to ``bounds`` (a success rate
    lies in [0, 1]); NaN bounds for a single seed."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return (float(x.mean()) if x.size else float("nan")), float("nan"), float("nan")
    df = x.size - 1
    t = T_975.get(df) or next((T_975[k] for k in sorted(T_975, reverse=True) if k <= df), 1.96)
    half = t * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(max(bounds[0], x.mean() - half)), float(min(bounds[1], x.mean() + half))


def paired_bootstrap_diff(groups, n_boot: int = 10_000, alpha: float = 0.05,
                          seed: int = 0) -> tuple[float, float, float]:
    """Mean paired difference ``a - b`` and its ``1 - alpha`` percentile-bootstrap interval, for ``groups`` of
    aligned outcome arrays ``(a, b)`` (one group per seed; the same tasks in both): tasks are resampled within each
    group and the group means averaged, so seeds count as fixed and the interval covers task sampling only."""
    rng = np.random.default_rng(seed)
    diffs = [np.asarray(a, dtype=float) - np.asarray(b, dtype=float) for a, b in groups]
    if not diffs or any(d.size == 0 for d in diffs):
        return float("nan"), float("nan"), float("nan")
    boots = np.mean([d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1) for d in diffs], axis=0)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(np.mean([d.mean() for d in diffs])), float(low), float(high)
