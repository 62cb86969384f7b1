"""Metrics against their closed forms and hand-made cases, and verl's bootstrap semantics."""

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrl.eval.metrics import (
    benchmark_metrics,
    bootstrap_best_worst_maj,
    bootstrap_ci,
    maj_at_k,
    normalize_vote,
    pass_at_k,
    subset_sizes,
)


@given(
    st.integers(1, 200).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
    )
)
def test_pass_at_k_equals_the_binomial_closed_form(nck):
    n, c, k = nck
    closed = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)


def test_pass_at_k_edges_and_errors():
    assert pass_at_k(4, 1, 4) == 1.0  # the example: 1 correct of 4
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(1000, 3, 1) == pytest.approx(0.003, abs=1e-15)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_maj_at_k_hand_made_cases():
    assert maj_at_k(["1", "1", "2"], [1, 1, 0]) == 1.0
    assert maj_at_k(["1", "2", "2"], [1, 0, 0]) == 0.0
    assert maj_at_k(["1", "2"], [1, 0]) == 0.5  # a tie: expected value of a random tie-break
    assert maj_at_k(["1", "2", "3", "3"], [1, 0, 0, 0]) == 0.0
    assert maj_at_k([None, None, "1"], [0, 0, 1]) == 1.0  # no answer never wins
    assert maj_at_k([None, None], [0, 0]) == 0.0
    assert normalize_vote("\\dfrac{1}{2} .") == "\\frac{1}{2}"
    assert normalize_vote("\\left( 1, 2 \\right)") == "(1,2)"


def verl_reference(values, preds, size, resamples=1000, seed=42):
    """verl's bootstrap_metric + calc_maj_val, written out loop by loop (the semantics)."""
    np.random.seed(seed)
    best, worst, maj = [], [], []
    for _ in range(resamples):
        idx = np.random.choice(len(values), size=size, replace=True)
        sub = [(values[i], preds[i]) for i in idx]
        best.append(max(v for v, _ in sub))
        worst.append(min(v for v, _ in sub))
        groups = defaultdict(list)
        for v, p in sub:
            groups[p].append(v)
        top = max(groups, key=lambda p: len(groups[p]))
        maj.append(groups[top][0])
    return {
        "best/mean": np.mean(best), "best/std": np.std(best),
        "worst/mean": np.mean(worst), "worst/std": np.std(worst),
        "maj/mean": np.mean(maj), "maj/std": np.std(maj),
    }  # fmt: skip


@pytest.mark.parametrize("size", [2, 4, 8])
def test_bootstrap_matches_verls_loop(size):
    values = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    preds = ["7", "3", "3", "7", "5", "", "7", "3"]
    got = bootstrap_best_worst_maj(values, preds, size)
    want = verl_reference(values, preds, size)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_best_at_k_under_reports_pass_at_k():
    got = bootstrap_best_worst_maj([1, 0, 0, 0], ["a", "b", "c", "d"], 4)
    assert got["best/mean"] == pytest.approx(1 - 0.75**4, abs=0.04)
    assert pass_at_k(4, 1, 4) == 1.0


def test_subset_sizes_and_benchmark_summary():
    assert subset_sizes(1) == [] and subset_sizes(4) == [2, 4] and subset_sizes(6) == [2, 4, 6]
    problems = [([1, 1, 0, 0], ["a", "a", "b", "b"]), ([0, 0, 0, 1], ["x", "y", "y", "z"])]
    metrics, intervals = benchmark_metrics(problems)
    assert metrics["avg@4"] == metrics["mean@4"] == pytest.approx(0.375)
    assert metrics["pass@4"] == 1.0
    assert metrics["pass@1"] == pytest.approx(0.375)
    assert metrics["maj@4"] == pytest.approx((0.5 + 0.0) / 2)
    assert {"avg@4", "pass@1", "pass@2", "pass@4", "maj@4"} <= intervals.keys()
    assert "best@4/mean" in metrics and "maj@2/std" in metrics
    low, high = intervals["avg@4"]
    assert low <= metrics["avg@4"] <= high


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = list(np.linspace(0, 1, 50))
    assert bootstrap_ci(values) == bootstrap_ci(values)
    low, high = bootstrap_ci(values)
    assert low < 0.5 < high and high - low < 0.4
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
