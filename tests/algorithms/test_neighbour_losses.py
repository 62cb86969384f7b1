"""CISPO and AEPO's policy loss: hand-computed values and gradients on the hand batch of
test_losses.py, and CISPO against the paper's own form −sg(r̂)·A·log π."""

from __future__ import annotations

import math

import pytest
import torch

from tests.algorithms.test_losses import F64, hand_batch
from toolrl.algorithms.losses import aepo_loss, cispo_loss, ppo_clip_loss, reads_entropy


def grad_of(loss_fn, batch, **kwargs):
    loss, metrics = loss_fn(**batch, **kwargs)
    loss.backward()
    return loss.item(), batch["log_probs"].grad[0, :6].tolist(), metrics


def test_cispo_weights_every_token_and_zeroes_no_gradient():
    # ratios [1, 1.5, 0.5, 0.5, 2, 12], A [+1, +1, +1, −1, −1, −1]; ε_low = 1 (no lower bound),
    # ε_high = 0.28: weights r̂ = [1, 1.28, 0.5, 0.5, 1.28, 1.28], l = −r̂·A, dl/dlog π = −r̂·A.
    loss, grad, metrics = grad_of(
        cispo_loss, hand_batch(), cispo_clip_low=1.0, cispo_clip_high=0.28
    )
    per_token = [-1.0, -1.28, -0.5, 0.5, 1.28, 1.28]
    assert loss == pytest.approx(sum(per_token) / 6, abs=1e-12)
    assert grad == pytest.approx([v / 6 for v in per_token], abs=1e-12)
    # Where ppo_clip gives no gradient (tokens 2, 4, 6), CISPO still does.
    _, ppo_grad, _ = grad_of(ppo_clip_loss, hand_batch())
    assert [ppo_grad[i] for i in (1, 3, 5)] == [0.0, 0.0, 0.0]
    assert all(grad[i] != 0 for i in (1, 3, 5))
    assert metrics["pg_clipfrac_ratio_high"].item() == pytest.approx(3 / 6)  # 1.5, 2, 12
    assert metrics["pg_clipfrac_ratio_low"].item() == 0  # no lower bound
    assert metrics["pg_clipfrac_lower"].item() == 0  # no dual clip


def test_cispo_lower_bound_when_asked():
    # ε_low = 0.2: the two r = 0.5 tokens get weight 0.8.
    loss, grad, metrics = grad_of(
        cispo_loss, hand_batch(), cispo_clip_low=0.2, cispo_clip_high=0.28
    )
    per_token = [-1.0, -1.28, -0.8, 0.8, 1.28, 1.28]
    assert loss == pytest.approx(sum(per_token) / 6, abs=1e-12)
    assert grad == pytest.approx([v / 6 for v in per_token], abs=1e-12)
    assert metrics["pg_clipfrac_ratio_low"].item() == pytest.approx(2 / 6)


def test_cispo_gradient_equals_the_papers_log_prob_form():
    # The paper (and verl) write −sg(r̂)·A·log π: same gradient, value shifted by a constant.
    torch.manual_seed(0)
    log_probs = (torch.randn(3, 5, dtype=F64) - 2).requires_grad_()
    old = log_probs.detach() + 0.4 * torch.randn(3, 5, dtype=F64)
    advantages = torch.randn(3, 1, dtype=F64).expand(3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=F64)
    loss, _ = cispo_loss(log_probs, old, advantages, mask, cispo_clip_low=0.5, cispo_clip_high=0.3)
    loss.backward()
    ours = log_probs.grad.clone()
    log_probs.grad = None
    ratio = torch.exp(log_probs.detach() - old)
    weight = ratio.clamp(0.5, 1.3)
    reference = -(weight * advantages * log_probs * mask).sum() / mask.sum()
    reference.backward()
    torch.testing.assert_close(ours, log_probs.grad, rtol=0, atol=1e-12)


def test_aepo_keeps_the_high_clipped_gradient_scaled_by_one_plus_eps():
    # Constant entropy ⇒ z = 0 ⇒ advantages unchanged. Against ppo_clip's hand case, only the
    # r = 1.5, A = +1 token changes: value −1.28 still, gradient −1.28 instead of 0.
    batch = hand_batch()
    entropy = torch.ones(1, 7, dtype=F64)
    loss, grad, metrics = grad_of(aepo_loss, batch, entropy=entropy)
    assert loss == pytest.approx(10.02 / 6, abs=1e-12)
    assert grad == pytest.approx([-1 / 6, -1.28 / 6, -0.5 / 6, 0.0, 2 / 6, 0.0], abs=1e-12)
    assert metrics["pg_clipfrac_ratio_high"].item() == pytest.approx(1 / 6)


def test_aepo_entropy_aware_advantage_by_hand():
    # One row, A = +1, entropies [1, 2, 3]: mean 2, population std √(2/3), z = ∓√1.5, 0.
    # α = 0.3 (given): factors 1 − 0.3·√1.5, 1, 1 + 0.3·√1.5. Ratios [1, 1.5, 0.9]:
    #   token 1: r = 1,   l = −f1,            dl/dlog π = −f1
    #   token 2: r = 1.5 (> 1.28, A > 0): l = −1.28·f2, gradient −1.28·f2 (preserved)
    #   token 3: r = 0.9, l = −f3·0.9,        dl/dlog π = −f3·0.9
    f = [1 - 0.3 * math.sqrt(1.5), 1.0, 1 + 0.3 * math.sqrt(1.5)]
    log_probs = torch.tensor([[0.0, math.log(1.5), math.log(0.9)]], dtype=F64, requires_grad=True)
    loss, metrics = aepo_loss(
        log_probs,
        torch.zeros(1, 3, dtype=F64),
        torch.ones(1, 3, dtype=F64),
        torch.ones(1, 3, dtype=F64),
        entropy=torch.tensor([[1.0, 2.0, 3.0]], dtype=F64),
        aepo_entropy_advantage=0.3,
    )
    loss.backward()
    per_token = [-f[0], -1.28 * f[1], -0.9 * f[2]]
    assert loss.item() == pytest.approx(sum(per_token) / 3, rel=1e-6)
    assert log_probs.grad[0].tolist() == pytest.approx([v / 3 for v in per_token], rel=1e-6)
    assert metrics["entropy_advantage_scale"].item() == pytest.approx(sum(f) / 3, rel=1e-6)


def test_aepo_factor_is_floored_at_zero():
    # α = 2 and z = −√1.5 would give 1 − 2·1.22 < 0: the advantage is zeroed, never flipped.
    log_probs = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    loss, _ = aepo_loss(
        log_probs,
        torch.zeros(1, 3, dtype=F64),
        torch.ones(1, 3, dtype=F64),
        torch.ones(1, 3, dtype=F64),
        entropy=torch.tensor([[1.0, 2.0, 3.0]], dtype=F64),
        aepo_entropy_advantage=2.0,
    )
    loss.backward()
    assert log_probs.grad[0, 0].item() == 0.0
    assert log_probs.grad[0, 2].item() == pytest.approx(-(1 + 2 * math.sqrt(1.5)) / 3)


def test_only_aepo_reads_entropy():
    assert reads_entropy(aepo_loss)
    assert not reads_entropy(cispo_loss) and not reads_entropy(ppo_clip_loss)
