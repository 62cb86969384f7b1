"""Advantage estimators: hand-computed groups, a loop-based reference, and invariances."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrl.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    broadcast_to_tokens,
    dr_grpo_advantages,
    get_advantage_estimator,
    grpo_advantages,
    rloo_advantages,
)

# Groups are non-contiguous: group 3 sits at positions 1, 4, 5.
#   group 7: [1, 1]      all equal           → 0, 0
#   group 3: [0, 2, 2]   mean 4/3, deviations −4/3, 2/3, 2/3, unbiased var (16+4+4)/9/2 = 4/3
#   group 9: [5]         singleton           → 0
#   group 4: [.1,.1,.1]  all equal; sum/3 = 0.10000000000000002 ≠ 0.1 in float64, still → 0
#   group 8: [3, −1]     mean 1, deviations ±2, unbiased var 8/1, std 2√2
SCORES = torch.tensor([1.0, 0.0, 1.0, 5.0, 2.0, 2.0, 0.1, 0.1, 0.1, 3.0, -1.0], dtype=torch.float64)
GROUPS = torch.tensor([7, 3, 7, 9, 3, 3, 4, 4, 4, 8, 8])


def test_grpo_hand_computed():
    std3, std8, eps = 2 / math.sqrt(3), 2 * math.sqrt(2), 1e-6
    expected = [0, -4 / 3 / (std3 + eps), 0, 0, 2 / 3 / (std3 + eps), 2 / 3 / (std3 + eps)]
    expected += [0, 0, 0, 2 / (std8 + eps), -2 / (std8 + eps)]
    got = grpo_advantages(SCORES, GROUPS)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert got.dtype == torch.float64


def test_dr_grpo_hand_computed():
    expected = [0, -4 / 3, 0, 0, 2 / 3, 2 / 3, 0, 0, 0, 2, -2]
    got = dr_grpo_advantages(SCORES, GROUPS)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_rloo_hand_computed():
    # group 3: 0 − (2+2)/2 = −2, 2 − (0+2)/2 = 1; group 8: 3 − (−1) = 4, −1 − 3 = −4
    expected = [0, -2, 0, 0, 1, 1, 0, 0, 0, 4, -4]
    got = rloo_advantages(SCORES, GROUPS)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.1, -0.7, 1 / 3, 1.0])
def test_all_equal_group_is_exactly_zero(name, dtype, value):
    scores = torch.full((16,), value, dtype=dtype)
    got = ADVANTAGE_ESTIMATORS[name](scores, torch.zeros(16, dtype=torch.long))
    assert torch.equal(got, torch.zeros(16, dtype=dtype))


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_singletons_get_zero(name):
    # Every group has one member: no baseline, so no signal (verl would return the raw score).
    got = ADVANTAGE_ESTIMATORS[name](torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0, 1, 2]))
    assert torch.equal(got, torch.zeros(3))


def test_integer_scores_and_empty_batch():
    got = grpo_advantages(torch.tensor([1, -1]), torch.tensor([0, 0]))
    torch.testing.assert_close(
        got, torch.tensor([1 / (math.sqrt(2) + 1e-6), -1 / (math.sqrt(2) + 1e-6)])
    )
    assert grpo_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="same length"):
        grpo_advantages(torch.zeros(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"rows \[1\] are NaN or inf"):
        rloo_advantages(torch.tensor([0.0, math.nan]), torch.zeros(2, dtype=torch.long))


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"valid: \['dr_grpo', 'grpo', 'rloo'\]"):
        get_advantage_estimator("grop")
    with pytest.raises(ValueError, match="Did you mean 'rloo'"):
        get_advantage_estimator("rlo")


def test_broadcast_to_tokens():
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    got = broadcast_to_tokens(torch.tensor([2.0, -0.5]), mask)
    assert torch.equal(got, torch.tensor([[2.0, 2.0, 0.0], [0.0, -0.5, -0.5]]))


# --- an independent, loop-based reference of the published formulas ---------------------------


def reference_advantages(name: str, scores: list[float], groups: list[int]) -> list[float]:
    out = []
    for score, group in zip(scores, groups, strict=True):
        members = [s for s, g in zip(scores, groups, strict=True) if g == group]
        if len(members) < 2 or len(set(members)) == 1:
            out.append(0.0)
        elif name == "grpo":
            out.append((score - statistics.mean(members)) / (statistics.stdev(members) + 1e-6))
        elif name == "dr_grpo":
            out.append(score - statistics.mean(members))
        else:  # rloo: the baseline is the mean of the other members
            out.append(score - (sum(members) - score) / (len(members) - 1))
    return out


group_batches = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from([-1.0, 0.0, 0.25, 1.0]) | st.floats(-3, 3)),
    min_size=1,
    max_size=24,
)


@settings(max_examples=60, deadline=None)
@given(batch=group_batches, name=st.sampled_from(sorted(ADVANTAGE_ESTIMATORS)))
def test_matches_loop_reference(batch, name):
    groups, scores = [g for g, _ in batch], [s for _, s in batch]
    got = ADVANTAGE_ESTIMATORS[name](
        torch.tensor(scores, dtype=torch.float64), torch.tensor(groups)
    )
    expected = torch.tensor(reference_advantages(name, scores, groups), dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    batch=group_batches, name=st.sampled_from(sorted(ADVANTAGE_ESTIMATORS)), seed=st.integers(0, 99)
)
def test_permuting_and_relabelling_groups_permutes_advantages(batch, name, seed):
    groups = torch.tensor([g for g, _ in batch])
    scores = torch.tensor([s for _, s in batch], dtype=torch.float64)
    perm = torch.randperm(len(batch), generator=torch.Generator().manual_seed(seed))
    relabelled = groups * 1000 - 17  # ids need not be small, positive or contiguous
    estimator = ADVANTAGE_ESTIMATORS[name]
    torch.testing.assert_close(
        estimator(scores[perm], relabelled[perm]), estimator(scores, groups)[perm]
    )


@settings(max_examples=30, deadline=None)
@given(scores=st.lists(st.floats(-5, 5), min_size=2, max_size=16))
def test_grpo_group_is_standardised(scores):
    scores_t = torch.tensor(scores, dtype=torch.float64)
    if scores_t.std() < 1e-2:
        return  # eps matters only for nearly constant groups
    got = grpo_advantages(scores_t, torch.zeros(len(scores), dtype=torch.long))
    assert abs(got.mean().item()) < 1e-9
    assert abs(got.std().item() - 1) < 1e-3
