"""Graders shared by RL rewards and evaluation, and the reward shaping that composes them.

    from toolrl.rewards import Graders, reward_for, areward_batch
    grade = Graders(config.reward).grade(sample, response_text)   # Grade(score, acc, pred, details)
    reward_for(traj, config.reward, max_response_length)            # sets traj.reward, reward_info

- `math.py`: last `\\boxed{}`; `strict` (the paper's exact string) or `equivalent` (math-verify).
- `choice.py`: the option letter (GPQA).
- `code.py`: the last python block against stdin/stdout, functional or assert tests, run in the
  sandbox and compared here (`code_harness.py` is what runs inside).
- `shaping.py`: tool-call shaping and the overlong penalty, composed by `RewardConfig`.
- `registry.py`: the grader for a `data_source`, and `reward_for` / `areward_batch`.

Names are imported lazily, so `python -m toolrl.rewards.verifier` (the math-verify worker)
starts without the sandbox and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Grade": "toolrl.rewards.base",
    "Grader": "toolrl.rewards.base",
    "MathGrader": "toolrl.rewards.math",
    "ChoiceGrader": "toolrl.rewards.choice",
    "CodeGrader": "toolrl.rewards.code",
    "MathVerifier": "toolrl.rewards.verifier",
    "Graders": "toolrl.rewards.registry",
    "grader_kind": "toolrl.rewards.registry",
    "register_data_source": "toolrl.rewards.registry",
    "reward_for": "toolrl.rewards.registry",
    "reward_batch": "toolrl.rewards.registry",
    "score_trajectories": "toolrl.rewards.registry",
    "areward_batch": "toolrl.rewards.registry",
    "shape_rewards": "toolrl.rewards.shaping",
}
__all__ = [
    "ChoiceGrader",
    "CodeGrader",
    "Grade",
    "Grader",
    "Graders",
    "MathGrader",
    "MathVerifier",
    "areward_batch",
    "grader_kind",
    "register_data_source",
    "reward_batch",
    "reward_for",
    "score_trajectories",
    "shape_rewards",
]

if TYPE_CHECKING:
    from toolrl.rewards.base import Grade, Grader
    from toolrl.rewards.choice import ChoiceGrader
    from toolrl.rewards.code import CodeGrader
    from toolrl.rewards.math import MathGrader
    from toolrl.rewards.registry import (
        Graders,
        areward_batch,
        grader_kind,
        register_data_source,
        reward_batch,
        reward_for,
        score_trajectories,
    )
    from toolrl.rewards.shaping import shape_rewards
    from toolrl.rewards.verifier import MathVerifier


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'toolrl.rewards' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
