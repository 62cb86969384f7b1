"""KL estimators: hand-computed values, clamps, a naive reference, and exact expectations."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from toolrl.algorithms.kl import KL_ESTIMATORS, get_kl_estimator, kl_k1, kl_k2, kl_k3

F64 = torch.float64
LN2 = math.log(2)

# log π − log π_ref = [0, ln 2, −ln 2]; for k3, log r = log π_ref − log π = [0, −ln 2, ln 2]
LOG_PROBS = torch.tensor([0.0, LN2, -LN2], dtype=F64)
REF_LOG_PROBS = torch.zeros(3, dtype=F64)


def test_k1_hand_computed():
    torch.testing.assert_close(
        kl_k1(LOG_PROBS, REF_LOG_PROBS), torch.tensor([0, LN2, -LN2], dtype=F64)
    )


def test_k2_hand_computed():
    half_sq = 0.5 * LN2**2  # ½ (±ln 2)²
    torch.testing.assert_close(
        kl_k2(LOG_PROBS, REF_LOG_PROBS), torch.tensor([0, half_sq, half_sq], dtype=F64)
    )


def test_k3_hand_computed():
    # r − log r − 1 with r = 1, 1/2, 2: 0, 1/2 + ln 2 − 1, 2 − ln 2 − 1
    expected = torch.tensor([0, 0.5 + LN2 - 1, 1 - LN2], dtype=F64)
    torch.testing.assert_close(kl_k3(LOG_PROBS, REF_LOG_PROBS), expected)


def test_k3_is_clamped():
    # log r = 30 → 20: e^20 − 21 ≈ 4.9e8 → 10;  log r = −30 → −20: e^−20 + 19 ≈ 19 → 10
    got = kl_k3(torch.tensor([-30.0, 30.0, 3.0]), torch.zeros(3))
    # the third, log r = −3: e^−3 + 3 − 1 = 2.0498 is inside the clamp
    torch.testing.assert_close(got, torch.tensor([10.0, 10.0, math.exp(-3) + 2]))


def test_unknown_estimator_lists_choices():
    with pytest.raises(ValueError, match=r"valid: \['k1', 'k2', 'k3'\]. Did you mean 'k3'"):
        get_kl_estimator("k33")


def naive_k3(log_p: float, log_ref: float) -> float:
    log_r = min(max(log_ref - log_p, -20.0), 20.0)
    return min(max(math.exp(log_r) - log_r - 1, -10.0), 10.0)


@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(st.floats(-30, 0), st.floats(-30, 0)), min_size=1, max_size=20))
@example(pairs=[(-3.247422912607313e-14, 0.0)])  # exp(x) − x − 1 rounds to −1.1e-16 here
def test_k3_matches_naive_reference(pairs):
    log_p = torch.tensor([p for p, _ in pairs], dtype=F64)
    log_ref = torch.tensor([q for _, q in pairs], dtype=F64)
    expected = torch.tensor([naive_k3(p, q) for p, q in pairs], dtype=F64)
    torch.testing.assert_close(kl_k3(log_p, log_ref), expected, rtol=1e-9, atol=1e-6)
    assert (kl_k3(log_p, log_ref) >= 0).all() and (kl_k2(log_p, log_ref) >= 0).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.integers(2, 12))
def test_k1_k3_expectations_are_kl_policy_to_reference(seed, vocab):
    # Weighting every token by π (the sampling distribution) gives the exact expectation: k1 and
    # k3 are unbiased for KL(π ‖ π_ref) — the direction matters, KL(π_ref ‖ π) differs.
    g = torch.Generator().manual_seed(seed)
    # Logits of scale 0.5 keep π_ref/π far from k3's clamp (a clamped estimate is biased).
    log_p = torch.log_softmax(torch.randn(vocab, generator=g, dtype=F64) * 0.5, -1)
    log_q = torch.log_softmax(torch.randn(vocab, generator=g, dtype=F64) * 0.5, -1)
    kl_p_q = (log_p.exp() * (log_p - log_q)).sum()
    for name in ("k1", "k3"):
        expectation = (log_p.exp() * KL_ESTIMATORS[name](log_p, log_q)).sum()
        torch.testing.assert_close(expectation, kl_p_q, rtol=1e-9, atol=1e-12)
    kl_q_p = (log_q.exp() * (log_q - log_p)).sum()
    assert not torch.isclose(kl_p_q, kl_q_p, rtol=1e-6, atol=0)  # the other direction differs
