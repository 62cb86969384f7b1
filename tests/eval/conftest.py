"""Small benchmark files in each of the released system's schemas."""

import json

import pytest

LCB_TRUTH = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def bench_files(tmp_path):
    """name → path of a 2-problem file per schema (HumanEval comes from the package)."""
    return {
        "aime24": write_jsonl(tmp_path / "aime24.jsonl", [
            {"ID": "2024-I-1", "Problem": "What is 3 + 4?", "Answer": 7},
            {"ID": "2024-I-2", "Problem": "What is 2 * 5?", "Answer": 10},
        ]),
        "aime25": write_jsonl(tmp_path / "aime25.jsonl", [
            {"id": "a", "problem": "What is 1/2 + 1/4?", "answer": "\\frac{3}{4}"},
            {"id": "b", "problem": "What is 9 - 2?", "answer": "7"},
        ]),
        "gpqa": write_jsonl(tmp_path / "gpqa.jsonl", [
            {"problem": "Which is a noble gas? A) O B) Ne C) N D) H", "solution": "B", "domain": "Chemistry"},
            {"problem": "2+2? A) 3 B) 5 C) 4 D) 1", "solution": "C", "domain": "Math"},
        ]),
        "lcb": write_jsonl(tmp_path / "lcb.jsonl", [
            {"problem": "Read a and b, print a + b.", "reward_model": json.dumps({"ground_truth": LCB_TRUTH}),
             "extra_info": json.dumps({"question_id": "abc001"})},
            {"problem": "Read a and b, print a * b.", "reward_model": json.dumps({"ground_truth": {
                "inputs": ["2 3\n"], "outputs": ["6\n"]}}), "extra_info": json.dumps({"question_id": "abc002"})},
        ]),
    }  # fmt: skip
