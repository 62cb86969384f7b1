"""entropy_from_logits and entropy_from_log_probs: the naive formula, its gradient, chunking,
and extreme logits."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrl.algorithms.losses import entropy_from_log_probs, entropy_from_logits


def naive_entropy(logits: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    return -(probs * probs.log()).sum(-1)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from([(5,), (3, 7), (2, 3, 11), (4, 1, 2)]),
    chunk_size=st.sampled_from([1, 2, 5, 1024]),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_equals_naive_entropy_and_gradient(seed, shape, chunk_size, scale):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    ours_input = logits.clone().requires_grad_()
    naive_input = logits.clone().requires_grad_()
    ours = entropy_from_logits(ours_input, chunk_size=chunk_size)
    naive = naive_entropy(naive_input)
    assert ours.shape == shape[:-1]
    torch.testing.assert_close(ours, naive, rtol=1e-10, atol=1e-10)
    weights = torch.randn(shape[:-1], generator=g, dtype=torch.float64)
    (ours * weights).sum().backward()
    (naive * weights).sum().backward()
    torch.testing.assert_close(ours_input.grad, naive_input.grad, rtol=1e-8, atol=1e-10)


def test_hand_computed_values():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, -math.inf, -math.inf]])
    torch.testing.assert_close(
        entropy_from_logits(logits), torch.tensor([math.log(4), math.log(2)])
    )


def test_extreme_logits_are_finite_and_exact_in_float32():
    # lse and Σp·z are both ≈ 1e4 here: subtracting them unshifted would lose ~1e-3 in float32.
    logits = torch.tensor([[1e4, 1e4, -1e4], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    got = entropy_from_logits(logits)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(
        got, torch.tensor([math.log(2), 0.0, math.log(3)]), rtol=0, atol=1e-6
    )
    logits.requires_grad_()
    entropy_from_logits(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_half_precision_is_computed_in_float32():
    logits = torch.randn(3, 50).to(torch.bfloat16)
    got = entropy_from_logits(logits, chunk_size=2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, naive_entropy(logits.float()), rtol=1e-5, atol=1e-5)


def test_no_rows_and_bad_chunk_size():
    assert entropy_from_logits(torch.zeros(0, 5)).shape == (0,)
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits(torch.zeros(2, 5), chunk_size=0)


def test_from_log_probs_equals_from_logits_with_banned_and_extreme_tokens():
    """The trainer's path (entropy of log_softmax) agrees with the logits path, including a
    −inf logit (p = 0 contributes 0, not NaN) and logits ~1e4 apart."""
    logits = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, -math.inf, -math.inf], [1e4, 1e4, -1e4, 0.0]]
    )
    got = entropy_from_log_probs(torch.log_softmax(logits, dim=-1))
    torch.testing.assert_close(got, torch.tensor([math.log(4), math.log(2), math.log(2)]))
    random = torch.randn(6, 300, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(
        entropy_from_log_probs(torch.log_softmax(random, dim=-1)), entropy_from_logits(random)
    )
