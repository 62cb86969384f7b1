"""SPEAR's self-imitation maths by hand: warm-up, baseline, recalibrated advantages, replay size,
the imitation loss (and its exactness under micro-batching)."""

from __future__ import annotations

import math

import pytest
import torch

from toolrl.algorithms import (
    group_mean_rewards,
    ppo_clip_loss,
    recalibrated_advantages,
    replay_count,
    reward_baseline,
    self_imitation_loss,
    warmup_weight,
)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0), (75, (1 - math.cos(math.pi / 4)) / 2), (150, 0.5), (300, 1.0), (301, 1.0)],
)
def test_warmup_weight_rises_as_a_half_cosine(step, expected):
    # γ(t) = γ₀·(1 − cos(π·t/T))/2 with T = 300 (the release's SPEAR scripts), γ₀ = 1
    assert warmup_weight(step, 1.0, 300) == pytest.approx(expected)
    assert warmup_weight(step, 0.5, 300) == pytest.approx(expected / 2)


def test_no_warmup_is_the_coefficient_from_the_start():
    assert warmup_weight(0, 0.3, 0) == 0.3


def test_reward_baseline_is_a_linearly_interpolated_percentile():
    assert reward_baseline(torch.tensor([-1.0, 0.5, 1.0, 0.0])) == pytest.approx(0.25)  # median
    assert reward_baseline(torch.tensor([1.0, 2, 3, 4, 5]), 25) == pytest.approx(2.0)
    assert reward_baseline(torch.tensor([0.0, 10.0]), 90) == pytest.approx(9.0)
    assert reward_baseline(torch.tensor([])) == 0.0


def test_group_mean_rewards_in_first_appearance_order():
    got = group_mean_rewards([1.0, 0.5, -1.0, 0.5, 1.0], ["a", "b", "a", "b", "c"])
    assert got == [0.0, 0.5, 1.0]


def test_recalibrated_advantages_are_against_the_baseline_not_the_group():
    got = recalibrated_advantages(torch.tensor([1.0, -0.5, 0.25]), 0.25)
    torch.testing.assert_close(got, torch.tensor([0.75, -0.75, 0.0]))


@pytest.mark.parametrize(
    ("eligible", "limit", "expected"),
    [(0, 8, 0), (1, 8, 0), (2, 8, 2), (3, 8, 2), (7, 8, 4), (9, 8, 8), (100, 8, 8), (5, 3, 3)],
)
def test_replay_count_is_the_largest_power_of_two_within_the_limit(eligible, limit, expected):
    assert replay_count(eligible, limit) == expected


def loss_fn(log_probs, old, adv, mask, **norms):
    return ppo_clip_loss(
        log_probs, old, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28, **norms
    )


def test_self_imitation_loss_by_hand():
    # ratios 1 and 1.5 with Â = 2: l = max(−2·1, −2·1) = −2 and max(−2·1.5, −2·1.28) = −2.56;
    # token-mean −2.28, weighted by γ = 0.5 → −1.14. The clipped token has no gradient; the
    # other's is −γ·Â·r/N = −0.5·2·1/2 = −0.5.
    log_probs = torch.log(torch.tensor([[0.5, 0.6]])).requires_grad_()
    old = torch.log(torch.tensor([[0.5, 0.4]]))
    adv, mask = torch.full((1, 2), 2.0), torch.ones(1, 2)
    loss, _ = self_imitation_loss(loss_fn, log_probs, old, adv, mask, weight=0.5)
    assert float(loss.detach()) == pytest.approx(-1.14)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.5, 0.0]]))


def test_self_imitation_loss_parts_add_up_to_the_mini_batch():
    torch.manual_seed(0)
    log_probs = -torch.rand(4, 5)
    old = log_probs + 0.3 * torch.randn(4, 5)
    adv = torch.tensor([[0.5], [1.0], [2.0], [0.1]]).expand(4, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0.0]])
    whole, _ = self_imitation_loss(loss_fn, log_probs, old, adv, mask, weight=0.7)
    norms = {"global_num_tokens": mask.sum(), "global_num_seqs": 4}
    parts = [
        self_imitation_loss(loss_fn, log_probs[r], old[r], adv[r], mask[r], weight=0.7, **norms)[0]
        for r in (slice(0, 1), slice(1, 3), slice(3, 4))
    ]
    torch.testing.assert_close(sum(parts), whole)
