"""Reward-shaping terms: pure functions of per-trajectory tensors, composed by the trainer.

- `overlong_penalty`: DAPO's soft overlong punishment, added to the score.
- `tool_call_shaping`: the recipe's partial credit for tool use on a wrong answer.
- `tool_call_curriculum` (with its weight, `tool_curriculum_weight`): SPEAR's intrinsic
  tool-call reward, strong early in training and decayed to nothing.

They take different inputs, so they are not put behind one registry; the config switches
(`reward.overlong_shaping`, `reward.tool_shaping`, `algorithm.self_imitation.tool_reward`)
choose which apply.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def overlong_penalty(
    response_lengths: Tensor,
    max_response_length: int,
    overlong_buffer: int,
    penalty_factor: float = 1.0,
) -> Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476, eq. 13), scaled by `penalty_factor`:

        0                                  if L ≤ L_max − L_buf
        ((L_max − L_buf) − L) / L_buf      if L_max − L_buf < L ≤ L_max
        −1                                 if L > L_max

    L counts every response token, tool output included (as arXiv 2510.11701 does). Unlike
    verl's DAPO reward manager, which keeps the linear ramp past L_max, the penalty stops at −1.
    """
    if not 0 < overlong_buffer <= max_response_length:
        raise ValueError(
            f"overlong_buffer must be in (0, max_response_length={max_response_length}], "
            f"got {overlong_buffer}"
        )
    lengths = response_lengths.to(torch.get_default_dtype())
    expected = max_response_length - overlong_buffer
    ramp = (expected - lengths) / overlong_buffer
    penalty = torch.where(lengths <= expected, 0.0, ramp)
    penalty = torch.where(lengths > max_response_length, -1.0, penalty)
    return penalty * penalty_factor


def tool_call_shaping(
    scores: Tensor,
    correct: Tensor,
    num_tool_calls: Tensor,
    bonus_per_call: float = 0.1,
    cap: float = -0.6,
) -> Tensor:
    """The recipe's tool-call shaping (arXiv 2510.11701's released code): on a wrong answer with k
    completed tool calls, the score −1 becomes min(−1 + 0.1·k, −0.6).

    Defined for any score as: correct → unchanged; wrong → max(r, min(r + bonus·k, cap)). The
    outer max means shaping never lowers a score (a partly passing code answer above `cap` keeps
    its score), and for r = −1 it is exactly min(−1 + bonus·k, cap).
    """
    if not (scores.shape == correct.shape == num_tool_calls.shape):
        raise ValueError(
            f"scores, correct and num_tool_calls must have the same shape; got "
            f"{tuple(scores.shape)}, {tuple(correct.shape)}, {tuple(num_tool_calls.shape)}"
        )
    if not scores.is_floating_point():
        scores = scores.to(torch.get_default_dtype())
    bonus = bonus_per_call * num_tool_calls.to(scores.dtype)
    shaped = torch.maximum(scores, torch.clamp(scores + bonus, max=cap))
    return torch.where(correct.bool(), scores, shaped)


def tool_curriculum_weight(step: int, schedule: str, decay_steps: int) -> float:
    """μ(t), the weight of SPEAR's tool-call reward at 1-based step t (arXiv 2509.22601, the
    release's `use_toolcall_reward`): `none` 0; `constant` 1; `cosine`
    (1 + cos(π·t / T)) / 2 for t ≤ T and 0 after (T = `decay_steps`, 200 in the release's
    SPEAR scripts), so tool use is rewarded while the policy learns the ropes, then not at all.
    """
    if schedule == "none":
        return 0.0
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return (1 + math.cos(math.pi * step / decay_steps)) / 2 if step <= decay_steps else 0.0
    raise ValueError(f"unknown tool reward schedule {schedule!r}; valid: none, constant, cosine")


def tool_call_curriculum(
    scores: Tensor,
    num_tool_turns: Tensor,
    weight: float,
    per_call: float = 0.1,
    cap: float = 1.0,
) -> Tensor:
    """SPEAR's intrinsic tool-call reward as its Qwen3 scripts compute it (the release's
    `default_compute_score_enforce_toolcall_posneg_decay_qwen3`; its Qwen2.5 scripts add μ·b to
    successes too), with k assistant turns that call a tool and b = min(per_call·k, cap):

        r + μ·b             if r ≤ 0   (a failure earns more the more turns used the tool)
        r + μ·1[k > 0]      if r > 0   (a success earns one bonus for having used a tool)

    μ = `weight` (`tool_curriculum_weight`). It is added on top of the recipe's own shaping
    (`reward.tool_shaping`, on by default); for SPEAR's reward alone, switch that off.
    """
    if scores.shape != num_tool_turns.shape:
        raise ValueError(
            f"scores and num_tool_turns must have the same shape; got {tuple(scores.shape)} "
            f"and {tuple(num_tool_turns.shape)}"
        )
    if not scores.is_floating_point():
        scores = scores.to(torch.get_default_dtype())
    turns = num_tool_turns.to(scores.dtype)
    bonus = torch.where(
        scores <= 0, torch.clamp(per_call * turns, max=cap), (turns > 0).to(scores.dtype)
    )
    return scores + weight * bonus
