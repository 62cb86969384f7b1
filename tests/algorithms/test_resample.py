"""GRPO-RoC's resampling on hand-made groups: penalties, proportions, uniform groups, seeds."""

from __future__ import annotations

import pytest

from toolrl.algorithms.resample import RoCStats, penalty, resample_on_correct
from toolrl.types import Sample, ToolCall, Trajectory, Turn


def traj(sample: str, index: int, correct: bool, statuses: list[list[str]]) -> Trajectory:
    """A trajectory with one turn per inner list, each holding calls of those statuses."""
    turns = [
        Turn(text="", num_sampled_tokens=1, tool_calls=[ToolCall("python", {}, s, "") for s in ss])
        for ss in statuses
    ]
    t = Trajectory(Sample(sample, [], "math", "1"), prompt_ids=[1], turns=turns, group_index=index)
    t.reward_info = {"acc": correct}
    t.reward = 1.0 if correct else -1.0
    return t


def test_penalty_is_the_error_fraction_plus_the_format_faults():
    clean = traj("a", 0, True, [["success"], ["success"]])
    assert penalty(clean) == 0
    # 4 calls, 1 failed, over 2 turns, 1 unparsable: 1/4 + 1/2.
    messy = traj("a", 1, True, [["success", "error"], ["parse_error", "success"]])
    assert penalty(messy) == pytest.approx(0.25 + 0.5)
    assert penalty(traj("a", 2, True, [[]])) == 0  # no calls: no tool penalty
    # infra errors are the sandbox's, not the policy's: not in the count either way
    assert penalty(traj("a", 3, True, [["infra_error", "success"]])) == 0
    assert penalty(traj("a", 4, True, [["error", "infra_error"]])) == 1


def test_positives_by_lowest_penalty_negatives_uniform_proportions_kept():
    # 8 rollouts, G = 4: 4 correct (penalties 0.5, 0, 1, 0.25) and 4 wrong.
    group = [
        traj("a", 0, True, [["error", "success"]]),  # 0.5
        traj("a", 1, False, [["success"]]),
        traj("a", 2, True, [["success"]]),  # 0
        traj("a", 3, False, [[]]),
        traj("a", 4, True, [["error"]]),  # 1
        traj("a", 5, False, [["error"]]),
        traj("a", 6, True, [["success", "success", "success", "error"]]),  # 0.25
        traj("a", 7, False, [[]]),
    ]
    stats = RoCStats()
    kept = resample_on_correct(group, 4, seed=3, stats=stats)
    assert len(kept) == 4
    positives = [t.group_index for t in kept if t.reward_info["acc"]]
    assert positives == [2, 6]  # k_pos = round(4·4/8) = 2: the two cleanest, in rollout order
    negatives = [t.group_index for t in kept if not t.reward_info["acc"]]
    assert len(negatives) == 2 and set(negatives) <= {1, 3, 5, 7}
    assert [t.group_index for t in kept] == sorted(t.group_index for t in kept)
    assert stats.metrics()["roc/kept_positive_penalty_mean"] == pytest.approx(0.125)
    assert stats.metrics()["roc/positive_penalty_mean"] == pytest.approx(1.75 / 4)


def test_proportion_is_rounded_and_never_leaves_a_group_one_sided():
    # 1 correct of 8, G = 4: round(0.5) = 0 → clamped up to 1 positive; 7 correct of 8:
    # round(3.5) = 4 → clamped down to 3, so one wrong answer stays.
    few = [traj("a", i, i == 5, [[]]) for i in range(8)]
    kept = resample_on_correct(few, 4, seed=0)
    assert sum(t.reward_info["acc"] for t in kept) == 1 and len(kept) == 4
    many = [traj("b", i, i != 2, [[]]) for i in range(8)]
    kept = resample_on_correct(many, 4, seed=0)
    assert sum(t.reward_info["acc"] for t in kept) == 3 and len(kept) == 4


def test_half_a_positive_rounds_up():
    # 5 correct of 8, G = 4: 2.5 positives → 3 (Python's round would give 2).
    group = [traj("a", i, i < 5, [[]]) for i in range(8)]
    assert sum(t.reward_info["acc"] for t in resample_on_correct(group, 4, seed=0)) == 3


def test_uniform_groups_are_dropped_and_counted():
    group = [traj("a", i, True, [[]]) for i in range(4)] + [
        traj("b", i, False, [[]]) for i in range(4)
    ]
    group += [traj("c", i, i % 2 == 0, [[]]) for i in range(4)]
    stats = RoCStats()
    kept = resample_on_correct(group, 2, seed=0, stats=stats)
    assert {t.sample.id for t in kept} == {"c"} and len(kept) == 2
    assert stats.metrics()["roc/groups_dropped_uniform"] == 2


def test_the_draw_is_a_function_of_the_seed():
    group = [traj("a", i, i < 2, [[]]) for i in range(2)] + [
        traj("a", i, False, [[]]) for i in range(2, 12)
    ]
    draws = {
        seed: [t.group_index for t in resample_on_correct(group, 4, seed=seed)] for seed in range(6)
    }
    assert draws[0] == [t.group_index for t in resample_on_correct(group, 4, seed=0)]
    assert len({tuple(d) for d in draws.values()}) > 1  # other seeds draw other negatives


def test_a_group_smaller_than_g_is_kept_whole():
    group = [traj("a", 0, True, [[]]), traj("a", 1, False, [[]]), traj("a", 2, False, [[]])]
    assert len(resample_on_correct(group, 4, seed=0)) == 3
