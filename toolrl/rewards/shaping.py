"""Outcome score → RL reward: the shaping terms of `algorithms/shaping.py`, composed by config.

    reward = tool_shaped(score) + overlong_penalty(L)

`tool_shaped` (when `reward.tool_shaping`): on a wrong answer with k completed tool calls,
max(score, min(score + bonus·k, cap)), so a −1 becomes min(−1 + 0.1·k, −0.6); correct answers
are unchanged. A tool call counts as *completed* when the tool ran and returned an observation
(status `success` or `error`: a program that raised still ran); calls that could not be parsed
and sandbox failures do not count. The released system applies this inside its score function
and the DAPO reward manager then adds the overlong penalty, which is the order used here.

`overlong_penalty` (when `reward.overlong_shaping`): DAPO's soft punishment on the response
length L (every response token, tool output included), 0 up to L_max − L_buf, then linear to
−factor at L_max.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toolrl.algorithms.shaping import overlong_penalty, tool_call_shaping
from toolrl.config import RewardConfig
from toolrl.types import Trajectory

COMPLETED_STATUSES = ("success", "error")


def num_completed_tool_calls(traj: Trajectory) -> int:
    """Tool calls that ran and returned an observation (see the module docstring)."""
    return sum(call.status in COMPLETED_STATUSES for call in traj.tool_calls)


@dataclass
class ShapedRewards:
    """Per-trajectory rewards and the terms they are made of (all lists, same length)."""

    rewards: list[float]
    tool_shaping: list[float]
    """tool_shaped(score) − score (0 when off or correct)."""
    overlong_penalty: list[float]
    """The DAPO term added (0 when off or short enough)."""


def shape_rewards(
    scores: list[float],
    correct: list[bool],
    num_tool_calls: list[int],
    response_lengths: list[int],
    config: RewardConfig,
    max_response_length: int,
) -> ShapedRewards:
    """Apply the configured shaping terms to a batch of outcome scores."""
    score_t = torch.tensor(scores, dtype=torch.float64)
    shaped = score_t
    if config.tool_shaping:
        shaped = tool_call_shaping(
            score_t,
            torch.tensor(correct, dtype=torch.bool),
            torch.tensor(num_tool_calls, dtype=torch.int64),
            bonus_per_call=config.tool_shaping_bonus,
            cap=config.tool_shaping_cap,
        )
    penalty = torch.zeros_like(score_t)
    if config.overlong_shaping:
        penalty = overlong_penalty(
            torch.tensor(response_lengths, dtype=torch.int64),
            max_response_length,
            config.overlong_buffer,
            config.overlong_penalty_factor,
        ).to(torch.float64)
    return ShapedRewards(
        rewards=(shaped + penalty).tolist(),
        tool_shaping=(shaped - score_t).tolist(),
        overlong_penalty=penalty.tolist(),
    )
