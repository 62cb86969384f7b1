"""Reward shaping: DAPO's overlong penalty, the recipe's tool-call shaping, SPEAR's curriculum."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrl.algorithms.shaping import (
    overlong_penalty,
    tool_call_curriculum,
    tool_call_shaping,
    tool_curriculum_weight,
)


def test_overlong_penalty_hand_computed():
    # L_max 16, L_buf 4: 0 up to 12, then (12 − L)/4, −1 past 16.
    lengths = torch.tensor([0, 12, 13, 14, 16, 17, 100])
    expected = torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0])
    torch.testing.assert_close(overlong_penalty(lengths, 16, 4), expected)
    torch.testing.assert_close(overlong_penalty(lengths, 16, 4, penalty_factor=0.5), expected / 2)


def test_overlong_penalty_paper_numbers():
    # L_max 20480, L_buf 4096: the ramp starts at 16384; 18432 is half-way → −0.5.
    got = overlong_penalty(torch.tensor([16384, 16385, 18432, 20480, 20481]), 20480, 4096)
    torch.testing.assert_close(got, torch.tensor([0.0, -1 / 4096, -0.5, -1.0, -1.0]))


@pytest.mark.parametrize("overlong_buffer", [0, -1, 17])
def test_overlong_buffer_must_fit(overlong_buffer):
    with pytest.raises(ValueError, match="overlong_buffer must be in"):
        overlong_penalty(torch.tensor([1]), 16, overlong_buffer)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 400), min_size=2, max_size=20), buffer=st.integers(1, 200))
def test_overlong_penalty_is_monotone_and_bounded(lengths, buffer):
    lengths_t = torch.tensor(sorted(lengths))
    got = overlong_penalty(lengths_t, 200, buffer)
    assert ((got <= 0) & (got >= -1)).all()
    assert (got[1:] <= got[:-1]).all()  # longer is never better


def test_tool_call_shaping_hand_computed():
    scores = torch.tensor([-1.0, -1.0, -1.0, -1.0, 0.5, -0.9, 1.0, -1.0])
    correct = torch.tensor([False, False, False, False, False, False, True, True])
    calls = torch.tensor([0, 3, 4, 9, 2, 1, 5, 2])
    # −1 + 0.1·[0, 3, 4, 9] capped at −0.6; 0.5 (partly passing code) is above the cap and kept;
    # −0.9 + 0.1 = −0.8; correct answers are untouched whatever their score.
    expected = torch.tensor([-1.0, -0.7, -0.6, -0.6, 0.5, -0.8, 1.0, -1.0])
    torch.testing.assert_close(tool_call_shaping(scores, correct, calls), expected)


def test_tool_call_shaping_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        tool_call_shaping(torch.zeros(2), torch.zeros(3, dtype=torch.bool), torch.zeros(2))


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.floats(-1, 1), st.booleans(), st.integers(0, 20)), min_size=1, max_size=16
    )
)
def test_tool_call_shaping_never_lowers_and_respects_cap(items):
    scores = torch.tensor([s for s, _, _ in items], dtype=torch.float64)
    correct = torch.tensor([c for _, c, _ in items])
    calls = torch.tensor([k for _, _, k in items])
    shaped = tool_call_shaping(scores, correct, calls)
    assert (shaped >= scores).all()
    assert (shaped <= torch.clamp(scores, min=-0.6)).all()  # at most max(score, cap)
    assert torch.equal(shaped[correct], scores[correct])
    more_calls = tool_call_shaping(scores, correct, calls + 1)
    assert (more_calls >= shaped).all()


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (50, (1 + math.cos(math.pi / 4)) / 2), (100, 0.5), (200, 0.0), (201, 0.0)],
)
def test_tool_curriculum_weight_decays_as_a_half_cosine(step, expected):
    # μ(t) = (1 + cos(π·t/T))/2 up to T = 200 (the release's SPEAR scripts), then 0
    assert tool_curriculum_weight(step, "cosine", 200) == pytest.approx(expected, abs=1e-12)
    assert tool_curriculum_weight(step, "constant", 200) == 1.0
    assert tool_curriculum_weight(step, "none", 200) == 0.0


def test_tool_curriculum_weight_names_the_valid_schedules():
    with pytest.raises(ValueError, match="none, constant, cosine"):
        tool_curriculum_weight(1, "linear", 10)


def test_tool_call_curriculum_hand_computed():
    # μ = 0.5, 0.1 a tool-calling turn, capped at 1: failures (r ≤ 0) earn μ·min(0.1·k, 1),
    # successes μ once if they called a tool at all.
    scores = torch.tensor([-1.0, -1.0, -0.6, 1.0, 1.0, 0.0])
    turns = torch.tensor([0, 3, 20, 2, 0, 1])
    expected = torch.tensor([-1.0, -0.85, -0.1, 1.5, 1.0, 0.05])
    torch.testing.assert_close(tool_call_curriculum(scores, turns, 0.5), expected)
    torch.testing.assert_close(tool_call_curriculum(scores, turns, 0.0), scores)


def test_tool_call_curriculum_needs_matching_shapes():
    with pytest.raises(ValueError, match="same shape"):
        tool_call_curriculum(torch.zeros(2), torch.zeros(3), 1.0)
