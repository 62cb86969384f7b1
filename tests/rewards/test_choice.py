"""Multiple-choice letters from the last box."""

import pytest

from toolrl.rewards.choice import ChoiceGrader, extract_choice, option_letters, parse_choice
from toolrl.types import Sample


@pytest.mark.parametrize(
    "boxed",
    ["B", "b", "(B)", "B)", "B.", "B: 42", "\\text{(B)}", "\\textbf{B}", "$B$", "Option B",
     "Answer: (B)", "\\text{\\textbf{b}}", " ( B ) "],
)  # fmt: skip
def test_decorated_letters_are_read(boxed):
    assert parse_choice(boxed) == "B"


@pytest.mark.parametrize("boxed", ["AB", "Bob", "42", "E", "", "answer", "\\frac{1}{2}"])
def test_non_letters_are_no_answer(boxed):
    assert parse_choice(boxed) is None


def test_option_count_comes_from_the_sample():
    assert option_letters({}) == "ABCD"
    assert option_letters({"options": ["x"] * 6}) == "ABCDEF"
    assert option_letters({"choices": 5}) == "ABCDE"
    assert parse_choice("E", option_letters({"options": 5})) == "E"


def test_grader_compares_with_the_ground_truth_letter():
    s = Sample(id="g", messages=[], data_source="gpqa_diamond", ground_truth="c")
    grader = ChoiceGrader()
    assert grader.grade(s, "I think \\boxed{A} no wait \\boxed{\\text{(C)}}").acc
    wrong = grader.grade(s, "\\boxed{D}")
    assert (wrong.score, wrong.acc, wrong.pred) == (-1.0, False, "D")
    assert extract_choice("no box at all") is None
