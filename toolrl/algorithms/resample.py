"""GRPO-RoC: Resample-on-Correct (rStar2-Agent, Shang et al., arXiv 2508.20722, Sec. 3.2).

Roll out `oversample`·G trajectories per prompt, then keep G for training:

    positives (correct answers)  the k_pos with the lowest penalty p = p_err + p_format,
    negatives (wrong answers)    k_neg chosen uniformly at random,
    proportions kept             k_pos = ⌊G·|pos| / |all| + ½⌋ (half up), clamped to [1, G − 1],
                                 k_neg = G − k_pos,
    uniform groups dropped       a group with no positive or no negative has no GRPO signal.

For one trajectory with C tool calls in T turns:

    p_err    = |calls whose program failed (status `error`)| / C          (0 when C = 0)
    p_format = min(1, |calls that could not be parsed (`parse_error`)| / T)

where C counts the calls that ran or failed to parse, not those whose infrastructure failed

so among correct answers the ones that got there with clean tool use are the ones reinforced,
while failures stay diverse (the paper's point: filtering negatives would hide what to avoid).
Infrastructure failures never count against the policy (such trajectories are not trained on).

Departures from rStar2-Agent's description: its format penalty counts answer-tag faults of its
own template; toolrl's format fault is a tool call the parser rejected (the answer format of a
correct trajectory is, by construction, fine). Ties among positives, and the negatives' draw,
are broken by a generator seeded per (step seed, sample id), so a resumed run keeps the same
trajectories. When fewer than G trajectories of a group are left (sandbox failures), all are
kept; a group is dropped only for lack of signal.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from toolrl.types import Trajectory


@dataclass
class RoCStats:
    """What one step's resampling did (`roc/*` metrics)."""

    groups: int = 0
    dropped_uniform: int = 0
    kept: int = 0
    penalty_kept: float = 0.0
    penalty_positive: float = 0.0
    positives: int = 0
    kept_positives: int = 0

    def metrics(self) -> dict[str, float]:
        return {
            "roc/groups_dropped_uniform": float(self.dropped_uniform),
            "roc/kept_trajectories": float(self.kept),
            "roc/positive_penalty_mean": self.penalty_positive / max(1, self.positives),
            "roc/kept_positive_penalty_mean": self.penalty_kept / max(1, self.kept_positives),
        }


def penalty(trajectory: Trajectory) -> float:
    """p_err + p_format of the module docstring."""
    calls = [c for c in trajectory.tool_calls if c.status != "infra_error"]
    errors = sum(c.status == "error" for c in calls)
    unparsed = sum(c.status == "parse_error" for c in calls)
    p_err = errors / len(calls) if calls else 0.0
    p_format = min(1.0, unparsed / max(1, len(trajectory.turns)))
    return p_err + p_format


def resample_on_correct(
    trajectories: list[Trajectory], group_size: int, seed: int, stats: RoCStats | None = None
) -> list[Trajectory]:
    """Keep `group_size` trajectories of each sample's oversampled group (in rollout order)."""
    stats = stats if stats is not None else RoCStats()
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(trajectories):
        groups.setdefault(t.sample.id, []).append(i)
    keep: list[int] = []
    for sample_id, members in groups.items():
        stats.groups += 1
        positives = [i for i in members if _correct(trajectories[i])]
        negatives = [i for i in members if not _correct(trajectories[i])]
        if not positives or not negatives:
            stats.dropped_uniform += 1
            continue
        generator = torch.Generator().manual_seed(_group_seed(seed, sample_id))
        chosen = _choose(trajectories, positives, negatives, group_size, generator, stats)
        keep += chosen
    keep.sort()
    stats.kept += len(keep)
    return [trajectories[i] for i in keep]


def _choose(trajectories, positives, negatives, group_size, generator, stats) -> list[int]:
    total = len(positives) + len(negatives)
    if total <= group_size:
        return positives + negatives
    k_pos = math.floor(group_size * len(positives) / total + 0.5)
    k_pos = min(max(k_pos, 1), group_size - 1, len(positives))
    k_neg = min(group_size - k_pos, len(negatives))
    # Lowest penalty first; a random key breaks ties (the draw is reproducible per group).
    tie = torch.rand(len(positives), generator=generator).tolist()
    penalties = {i: penalty(trajectories[i]) for i in positives}
    ranked = sorted(zip(positives, tie, strict=True), key=lambda p: (penalties[p[0]], p[1]))
    kept_pos = [i for i, _ in ranked[:k_pos]]
    order = torch.randperm(len(negatives), generator=generator).tolist()
    kept_neg = [negatives[j] for j in order[:k_neg]]
    stats.positives += len(positives)
    stats.penalty_positive += sum(penalties.values())
    stats.kept_positives += len(kept_pos)
    stats.penalty_kept += sum(penalties[i] for i in kept_pos)
    return kept_pos + kept_neg


def _correct(trajectory: Trajectory) -> bool:
    return bool(trajectory.reward_info.get("acc", False))


def _group_seed(seed: int, sample_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
