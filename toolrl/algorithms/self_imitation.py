"""SPEAR's self-imitation maths: the recalibrated advantages of replayed trajectories, the
running reward baseline they are measured against, the imitation loss and its warm-up weight.

SPEAR (Qin, Tan et al. 2025, "Learn the Ropes, Then Trust the Wins: Self-imitation with
Progressive Exploration for Agentic Reinforcement Learning", arXiv 2509.22601; released code
TencentYoutuResearch/SPEAR, `verl/verl/trainer/ppo/ray_trainer_hybrid.py` and
`verl/verl/workers/actor/dp_actor.py`) keeps the trajectories that beat their group in a replay
buffer and trains on them again, off-policy:

- baseline: b = P_q({mean reward of each group of the recent steps}), q = 50 (the median of
  the last 10,240 group means in the release), so the buffer's trajectories are judged against
  what the policy achieves now, not against the group they were sampled in (policy drift);
- recalibrated advantage: Â_i = r_i − b (the release's Dr. GRPO form, no division by a std),
  and only Â_i > 0 is replayed;
- imitation loss: L_SIL = γ(t) · agg(PPO-clip(π_θ / π_behaviour, Â⁺)), the run's policy loss
  and aggregation over the replayed rows, π_behaviour the log-probs the rows were sampled with;
- warm-up: γ(t) = γ₀ · (1 − cos(π·t / T)) / 2 for t ≤ T, then γ₀ (γ₀ = 1, T = 300 steps in the
  release's SPEAR scripts), t the 1-based step number (verl's `global_steps`).

The replay buffer itself, which holds state, is toolrl/trainers/self_imitation.py; the tool-call
reward curriculum SPEAR pairs with it is `tool_call_curriculum` in toolrl/algorithms/shaping.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def warmup_weight(step: int, coef: float, warmup_steps: int) -> float:
    """γ(t) = coef · (1 − cos(π·t / T)) / 2 for t ≤ T, coef after; T = 0 means no warm-up.

    `step` is the 1-based step number t (γ(0) = 0, γ(T/2) = coef/2, γ(T) = coef).
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return coef
    return coef * (1 - math.cos(math.pi * step / warmup_steps)) / 2


def reward_baseline(group_means: Tensor, percentile: float = 50.0) -> float:
    """b = the `percentile`-th percentile of the recent group-mean rewards, with linear
    interpolation between order statistics (numpy's and `torch.quantile`'s default, as the
    release's `np.percentile`). 0 when there is no group yet."""
    if group_means.numel() == 0:
        return 0.0
    values = group_means.to(torch.float64)
    return float(torch.quantile(values, percentile / 100))


def group_mean_rewards(rewards: list[float], groups: list[str]) -> list[float]:
    """The mean reward of each group (trajectories of one prompt), in first-appearance order:
    what the baseline's history records of a step."""
    members: dict[str, list[float]] = {}
    for reward, group in zip(rewards, groups, strict=True):
        members.setdefault(group, []).append(float(reward))
    return [sum(values) / len(values) for values in members.values()]


def recalibrated_advantages(rewards: Tensor, baseline: float) -> Tensor:
    """Â_i = r_i − b: a replayed trajectory's advantage against today's baseline, not its
    group's. The caller replays only Â_i > 0."""
    return rewards.to(torch.float32) - baseline


def replay_count(eligible: int, limit: int) -> int:
    """How many of `eligible` trajectories one replay trains on: the largest power of two
    ≤ eligible, at most `limit` (the release's rule; 0 for fewer than two)."""
    if eligible <= 1:
        return 0
    return min(1 << (eligible.bit_length() - 1), limit)


def self_imitation_loss(
    policy_loss: Callable[..., tuple[Tensor, dict[str, Tensor]]],
    log_probs: Tensor,
    behaviour_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    weight: float,
    **normalisers,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_SIL = weight · policy_loss(log π_θ, log π_behaviour, Â⁺, mask, **normalisers).

    `advantages` are per-token (Â_i broadcast over trajectory i's response) and positive;
    `normalisers` are the replay mini-batch's global counts (`agg_loss`), so micro-batch parts
    add up to the mini-batch's loss. Returns the weighted loss and the policy loss's metrics.
    """
    loss, metrics = policy_loss(
        log_probs, behaviour_log_probs, advantages, response_mask, **normalisers
    )
    return weight * loss, metrics
