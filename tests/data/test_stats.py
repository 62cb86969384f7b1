"""`toolrl data stats`: sources, lengths, difficulty, and the near-duplicate rate."""

import json

import numpy as np
import pytest

from toolrl.cli import main
from toolrl.data.io import DataError
from toolrl.data.stats import dataset_stats, jaccard, near_duplicates, normalize, shingles


def rl_row(i: int, question: str, source: str = "math", **extra) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "data_source": source,
        "ability": "math",
        "reward_model": {"ground_truth": str(i)},
        "extra_info": {"index": i, **extra},
    }


def test_shingles_and_exact_jaccard():
    a = shingles(normalize("The  quick brown fox"), 5)
    b = shingles(normalize("the quick brown fox"), 5)
    assert np.array_equal(a, b)  # case and whitespace do not matter
    assert jaccard(a, b) == 1.0
    assert jaccard(a, shingles(normalize("an entirely unrelated sentence"), 5)) < 0.1
    assert len(shingles("abc", 5)) == 1  # shorter than n: one shingle of the whole text


def test_near_duplicates_find_edits_not_different_problems():
    base = "Let $n$ be the number of positive integers less than 1000 divisible by 7 but not 11. Find $n$."
    texts = [
        base,
        base.replace("Find $n$.", "Find $n$!"),  # one character changed: a near-duplicate
        base.upper(),  # same after normalisation
        "Let $n$ be the number of positive integers less than 2000 divisible by 3 and 5. Compute $n$.",
        "A circle of radius 3 is inscribed in a square. What is the area of the square?",
    ]
    assert near_duplicates(texts) == [None, 0, 0, None, None]


def test_near_duplicate_rate_matches_exact_pairwise_jaccard():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words, 40)) for _ in range(150)]
    for i in range(0, 150, 10):  # every tenth text gets a lightly edited copy later on
        texts.append(texts[i].replace(texts[i].split()[3], "changed", 1))
    found = near_duplicates(texts)
    grams = [shingles(normalize(t)) for t in texts]
    brute = [
        next((j for j in range(i) if jaccard(grams[i], grams[j]) >= 0.8), None)
        for i in range(len(texts))
    ]
    assert [f is not None for f in found] == [b is not None for b in brute]
    assert sum(f is not None for f in found) == 15


def test_rl_stats(tmp_path, tiny_tokenizer):
    rows = [
        rl_row(
            0,
            "What is the sum of the first ten positive integers?",
            difficulty="easy",
            pass_rate=0.875,
        ),
        rl_row(
            1,
            "What is the sum of the first ten positive integers ?",
            difficulty="easy",
            pass_rate=0.75,
        ),
        rl_row(2, "Factor 91 into primes.", source="numina", difficulty="hard", pass_rate=0.125),
        rl_row(3, "How many primes are below 30?", source="numina"),
    ]
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = dataset_stats(path, tokenizer=tiny_tokenizer)
    assert stats["schema"] == "rl" and stats["rows"] == 4
    assert stats["data_sources"] == {"math": 2, "numina": 2}
    assert stats["lengths"]["problem_chars"]["min"] == len("Factor 91 into primes.")
    assert stats["lengths"]["prompt_tokens"]["count"] == 4
    assert stats["difficulty"]["labels"] == {"easy": 2, "hard": 1}
    assert stats["difficulty"]["pass_rate_histogram"]["0.1-0.2"] == 1
    dups = stats["near_duplicates"]
    assert dups["rows"] == 1 and dups["rate"] == 0.25 and dups["examples"] == [[0, 1]]
    assert "MinHash" in dups["method"] and "Jaccard" in dups["method"]


def test_sft_stats_and_cli(tmp_path, capsys):
    call = (
        '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(2)"}}\n</tool_call>'
    )
    row = {
        "messages": [
            {"role": "user", "content": "What is 1 + 1?"},
            {"role": "assistant", "content": "Let me run it.\n" + call},
            {"role": "tool", "content": "2\n"},
            {"role": "assistant", "content": "\\boxed{2}"},
        ],
        "tools": [],
    }
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    assert main(["data", "stats", str(path), "--json", str(tmp_path / "s.json")]) == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["schema"] == "sft"
    assert (
        stats["lengths"]["tool_calls"]["mean"] == 1
        and stats["lengths"]["assistant_turns"]["max"] == 2
    )
    assert stats["near_duplicates"]["exact_duplicate_rate"] == 0.5
    assert "near-duplicate rate" in capsys.readouterr().out


def test_errors_name_file_and_row(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(
        json.dumps(rl_row(0, "q")) + "\n" + json.dumps({"prompt": "[]", "data_source": "d"}) + "\n"
    )
    with pytest.raises(DataError, match=r"x\.jsonl: row 2: column `prompt`"):
        dataset_stats(path)
    (tmp_path / "y.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError, match="neither `prompt`"):
        dataset_stats(tmp_path / "y.jsonl")
