"""The QA grader: SQuAD normalisation, exact match, token F1, answer extraction, routing."""

import pytest

from toolrl.data.io import DataError
from toolrl.data.rl import load_rl_samples
from toolrl.rewards.qa import (
    QAGrader,
    exact_match,
    extract_answer,
    golden_answers,
    normalize_answer,
    token_f1,
)
from toolrl.rewards.registry import Graders, grader_kind
from toolrl.types import Sample


@pytest.mark.parametrize(
    "text, normal",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple,  a pear ", "apple pear"),
        ("Theatre", "theatre"),  # `the` only as a whole word
        ("U.S.A.", "usa"),
        ("", ""),
    ],
)
def test_squad_normalisation(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_takes_any_golden_answer():
    assert exact_match("the Velmora", ["Kestrel", "velmora"])
    assert not exact_match("Velmora city", ["Velmora"])


@pytest.mark.parametrize(
    "pred, golds, f1",
    [
        ("Velmora city", ["Velmora"], 2 * 0.5 * 1 / 1.5),  # P 1/2, R 1
        ("Admiral Tessaly Brune", ["Tessaly Brune"], 0.8),  # P 2/3, R 1
        ("Brune", ["Tessaly Brune", "Brune"], 1.0),  # the best golden answer counts
        ("the", ["the"], 0.0),  # nothing is left after normalisation
        ("north north", ["north"], 2 * 0.5 * 1 / 1.5),  # multiset intersection: one `north`
    ],
)
def test_token_f1_by_hand(pred, golds, f1):
    assert token_f1(pred, golds) == pytest.approx(f1)


def test_answer_extraction_prefers_the_last_box_then_the_answer_tag():
    assert extract_answer("x \\boxed{a} y \\boxed{b}") == "b"
    assert extract_answer("<answer>one</answer> <answer>two</answer>") == "two"
    assert extract_answer("no answer") is None


def test_golden_answers_shapes():
    assert golden_answers({"target": ["a", "b"]}) == ["a", "b"]
    assert golden_answers("a") == ["a"]
    with pytest.raises(ValueError, match="must list the golden answers"):
        golden_answers([])


def test_grader_scores_by_exact_match_and_reports_f1():
    sample = Sample("q", [], "nq", {"target": ["Tessaly Brune"]})
    right = QAGrader().grade(sample, "It was \\boxed{tessaly brune.}")
    assert (right.score, right.acc, right.details["f1"]) == (1.0, True, 1.0)
    partial = QAGrader().grade(sample, "\\boxed{Admiral Tessaly Brune}")
    assert partial.score == -1.0 and partial.details["f1"] == pytest.approx(0.8)
    assert QAGrader().grade(sample, "I do not know").pred is None


def test_search_r1_rows_load_and_route_to_the_qa_grader(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"id": "q1", "question": "Who founded Ostrand?", "golden_answers": ["Tessaly Brune"]}\n'
        '{"question": "Capital?", "golden_answers": "Velmora", "data_source": "hotpotqa"}\n'
    )
    first, second = load_rl_samples(path)
    assert first.id == "q1" and "Who founded Ostrand?" in first.messages[0]["content"]
    assert first.ground_truth == {"target": ["Tessaly Brune"]}
    assert grader_kind(first.data_source) == grader_kind(second.data_source) == "qa"
    assert grader_kind("gpqa_diamond") == "choice" and grader_kind("aime24") == "math"
    assert Graders().grade(first, "\\boxed{Tessaly Brune}").acc
    assert Graders().modes("nq") == ("strict",)


def test_a_malformed_qa_row_names_file_row_and_column(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "Q", "golden_answers": []}\n')  # line 1
    with pytest.raises(DataError, match=r"bad.jsonl: row 1: column `golden_answers`"):
        load_rl_samples(path)
