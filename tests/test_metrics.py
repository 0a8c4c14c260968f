"""The statistics behind the headline: bootstrap intervals checked against known cases, so a wrong resampling
(one task per replicate, seeds resampled as tasks, a shifted quantile) fails here rather than in a table."""

import numpy as np
import pytest

from steca_lib.metrics import bootstrap_ci, paired_bootstrap_diff


def paired_outcomes(rng, n, p_a=0.55, p_b=0.40, shared=0.5):
    """Success of two methods on the same n tasks: a task's difficulty is shared, so the outcomes correlate."""
    easy = rng.random(n) < shared
    a = np.where(easy, rng.random(n) < p_a + 0.3, rng.random(n) < p_a - 0.3).astype(float)
    b = np.where(easy, rng.random(n) < p_b + 0.3, rng.random(n) < p_b - 0.3).astype(float)
    return a, b


def test_paired_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true = 0.55 - 0.40
    hits = 0
    trials = 300
    for t in range(trials):
        groups = [paired_outcomes(rng, 80) for _ in range(3)]  # three seeds, 80 tasks each
        _, low, high = paired_bootstrap_diff(groups, n_boot=2000, seed=t)
        hits += low <= true <= high
    assert 0.91 <= hits / trials <= 0.985, hits / trials


def test_paired_interval_width_matches_the_analytic_standard_error():
    rng = np.random.default_rng(2)
    groups = [paired_outcomes(rng, n) for n in (3000, 2000)]
    mean, low, high = paired_bootstrap_diff(groups, n_boot=4000, seed=0)
    diffs = [a - b for a, b in groups]
    se = 0.5 * np.sqrt(sum(d.var() / d.size for d in diffs))  # mean of two group means, tasks resampled within each
    assert mean == pytest.approx(np.mean([d.mean() for d in diffs]))
    assert (high - low) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert low < mean < high and (mean - low) == pytest.approx(high - mean, rel=0.25)


def test_paired_interval_of_identical_methods_is_a_point_and_uses_pairs():
    rng = np.random.default_rng(3)
    a, _ = paired_outcomes(rng, 200)
    assert paired_bootstrap_diff([(a, a)]) == (0.0, 0.0, 0.0)
    # pairing matters: b = a shifted by one task has the same mean but unpaired differences, so a wider interval
    b = np.roll(a, 1)
    _, low, high = paired_bootstrap_diff([(a, b)], n_boot=4000)
    assert high - low > 0.05


def test_plain_bootstrap_interval_covers_and_matches_the_binomial_error():
    rng = np.random.default_rng(4)
    hits = sum(low <= 0.3 <= high for low, high in
               (bootstrap_ci(rng.random(150) < 0.3, n_boot=2000, seed=t)[1:] for t in range(300)))
    assert 0.91 <= hits / 300 <= 0.985
    _, low, high = bootstrap_ci(rng.random(5000) < 0.3, n_boot=4000)
    assert (high - low) / 2 == pytest.approx(1.96 * np.sqrt(0.3 * 0.7 / 5000), rel=0.1)


def test_empty_input_gives_nan_not_a_number_that_looks_real():
    assert all(np.isnan(v) for v in paired_bootstrap_diff([([], [])]))
    assert all(np.isnan(v) for v in bootstrap_ci([]))
