"""Mismatch metrics and rollout correction on hand-computed cases (formulas in
toolrl/algorithms/rollout_correction.py)."""

import math

import pytest
import torch

from toolrl.algorithms import MismatchTally, correct, correction_rates, ppo_clip_loss
from toolrl.trainers.parallel import SingleProcess

# Two trajectories, three token slots; the second has two response tokens. δ = old − rollout:
#   row 0: δ = [ln 3, ln 0.6, 0]       ratios 3, 0.6, 1
#   row 1: δ = [ln 1.5, ln 1.5, (pad)] ratios 1.5, 1.5
ROLLOUT = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
DELTA = torch.tensor([[math.log(3.0), math.log(0.6), 0.0], [math.log(1.5), math.log(1.5), 0.0]])
OLD = ROLLOUT + DELTA
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_mismatch_metrics_by_hand():
    tally = MismatchTally()
    tally.add(OLD, ROLLOUT, MASK)
    m = tally.reduce(SingleProcess()).metrics()
    deltas = [math.log(3), math.log(0.6), 0.0, math.log(1.5), math.log(1.5)]
    ratios = [3.0, 0.6, 1.0, 1.5, 1.5]
    assert m["rollout_corr/measured_tokens"] == 5
    assert m["rollout_corr/logprob_abs_diff_mean"] == pytest.approx(sum(map(abs, deltas)) / 5)
    assert m["rollout_corr/logprob_abs_diff_max"] == pytest.approx(math.log(3))
    assert m["rollout_corr/kl"] == pytest.approx(-sum(deltas) / 5)
    k3 = sum(r - 1 - d for r, d in zip(ratios, deltas, strict=True)) / 5
    assert m["rollout_corr/k3_kl"] == pytest.approx(k3)
    assert m["rollout_corr/ratio_outside_frac"] == pytest.approx(1 / 5)  # only 3 is outside
    probs = [
        abs(math.exp(o) - math.exp(r))
        for o, r in zip(OLD[MASK > 0], ROLLOUT[MASK > 0], strict=True)
    ]
    assert m["training/rollout_probs_diff_max"] == pytest.approx(max(probs), rel=1e-5)
    assert m["training/rollout_probs_diff_mean"] == pytest.approx(sum(probs) / 5, rel=1e-5)


def test_token_truncated_is_caps_each_ratio_at_c():
    weights, keep, counts = correct(
        OLD, ROLLOUT, MASK, rollout_is="token", rollout_is_threshold=2.0
    )
    expected = torch.tensor([[2.0, 0.6, 1.0], [1.5, 1.5, 0.0]])
    torch.testing.assert_close(weights, expected)
    assert torch.equal(keep, MASK)
    rates = correction_rates(counts)
    assert rates["rollout_corr/is_truncated_frac"] == pytest.approx(1 / 5)
    assert rates["rollout_corr/is_weight_mean"] == pytest.approx((2 + 0.6 + 1 + 1.5 + 1.5) / 5)


def test_sequence_is_puts_the_capped_product_on_every_token():
    weights, _, _ = correct(OLD, ROLLOUT, MASK, rollout_is="sequence", rollout_is_threshold=5.0)
    # row 0: 3 · 0.6 · 1 = 1.8; row 1: 1.5 · 1.5 = 2.25 (the padding slot gets 0)
    torch.testing.assert_close(weights, torch.tensor([[1.8, 1.8, 1.8], [2.25, 2.25, 0.0]]))
    capped, _, _ = correct(OLD, ROLLOUT, MASK, rollout_is="sequence", rollout_is_threshold=2.0)
    torch.testing.assert_close(capped, torch.tensor([[1.8, 1.8, 1.8], [2.0, 2.0, 0.0]]))


def test_token_rejection_drops_tokens_outside_the_band():
    _, keep, counts = correct(OLD, ROLLOUT, MASK, rollout_rs="token", rollout_rs_threshold=2.0)
    # band [1/2, 2]: the ratio 3 is out, 0.6 and the others stay
    assert keep.tolist() == [[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    rates = correction_rates(counts)
    assert rates["rollout_corr/rejected_token_frac"] == pytest.approx(1 / 5)
    assert rates["rollout_corr/rejected_seq_frac"] == 0.0


def test_sequence_and_geometric_rejection_drop_whole_trajectories():
    # products: row 0 = 1.8, row 1 = 2.25; band [1/2, 2] rejects row 1
    _, keep, counts = correct(OLD, ROLLOUT, MASK, rollout_rs="sequence", rollout_rs_threshold=2.0)
    assert keep.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert correction_rates(counts)["rollout_corr/rejected_seq_frac"] == 0.5
    # geometric means: row 0 = 1.8^(1/3) ≈ 1.2164, row 1 = 1.5; band [1/1.3, 1.3] rejects row 1
    _, keep, _ = correct(OLD, ROLLOUT, MASK, rollout_rs="geometric", rollout_rs_threshold=1.3)
    assert keep.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    # a lower bound of its own: [1.3, 2] keeps only row 1
    _, keep, _ = correct(
        OLD,
        ROLLOUT,
        MASK,
        rollout_rs="geometric",
        rollout_rs_threshold=2.0,
        rollout_rs_threshold_lower=1.3,
    )
    assert keep.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]


def test_rejected_tokens_leave_the_weights_and_the_loss_denominator():
    weights, keep, _ = correct(
        OLD, ROLLOUT, MASK, rollout_is="token", rollout_rs="token", rollout_rs_threshold=2.0
    )
    assert weights[0, 0] == 0.0  # rejected: no weight either
    # ppo_clip on ratio 1 (π_θ = π_old), A = 1: each token's loss is −A·w = −w; token-mean over
    # the 4 kept tokens, not the 5 of the old mask.
    adv = torch.ones_like(OLD)
    loss, _ = ppo_clip_loss(OLD, OLD, adv, keep, is_weights=weights)
    assert float(loss) == pytest.approx(-(0.6 + 1.0 + 1.5 + 1.5) / 4)


def test_is_weights_scale_the_gradient_token_by_token():
    logprobs = OLD.clone().requires_grad_(True)
    adv = torch.ones_like(OLD)
    weights = torch.tensor([[2.0, 0.6, 1.0], [1.5, 1.5, 0.0]])
    ppo_clip_loss(logprobs, OLD, adv, MASK, is_weights=weights).__getitem__(0).backward()
    # ∂(−A·w·r)/∂logπ = −A·w·r = −w at r = 1, over 5 tokens
    torch.testing.assert_close(logprobs.grad, -weights * MASK / 5)


def test_extreme_log_ratios_stay_finite():
    old = torch.tensor([[0.0, -100.0]])
    rollout = torch.tensor([[-100.0, 0.0]])
    mask = torch.ones(1, 2)
    weights, _, _ = correct(old, rollout, mask, rollout_is="token", rollout_is_threshold=2.0)
    assert weights.tolist() == [[2.0, pytest.approx(math.exp(-20))]]
    tally = MismatchTally()
    tally.add(old, rollout, mask)
    assert all(math.isfinite(v) for v in tally.metrics().values())


def test_the_decoupled_ppo_objective_of_asynchronous_training_by_hand():
    """AReaL's decoupled PPO: the clip around the proximal policy (π_old, recomputed), an
    importance weight π_prox / π_behav, tokens whose weight exceeds the cap dropped. In toolrl:
    token IS + token rejection with the cap as the upper bound and 0 as the lower.

    weights 0.5, 1.2, 6 (cap 5: the third is dropped); r = π_θ / π_prox = 1.5, 0.7, 1;
    A = 1, −1, 1; ε = 0.2 / 0.28:
      token 1: −min(1.5·1, 1.28·1) = −1.28;  token 2: max(0.7, 0.8) = 0.8 (A < 0)
      loss = (0.5·(−1.28) + 1.2·0.8) / 2 kept tokens = 0.16
    """
    behav = torch.tensor([[-1.0, -1.0, -1.0]])
    prox = behav + torch.tensor([[math.log(0.5), math.log(1.2), math.log(6.0)]])
    theta = prox + torch.tensor([[math.log(1.5), math.log(0.7), 0.0]])
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    mask = torch.ones(1, 3)
    weights, keep, _ = correct(
        prox, behav, mask,
        rollout_is="token", rollout_is_threshold=5.0,
        rollout_rs="token", rollout_rs_threshold=5.0, rollout_rs_threshold_lower=0.0,
    )  # fmt: skip
    assert keep.tolist() == [[1.0, 1.0, 0.0]]
    loss, _ = ppo_clip_loss(theta, prox, adv, keep, is_weights=weights)
    assert float(loss) == pytest.approx((0.5 * -1.28 + 1.2 * 0.8) / 2, rel=1e-5)
