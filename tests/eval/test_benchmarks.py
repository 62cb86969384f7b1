"""Benchmark loaders: each schema, the paper's prompts, errors that name file, row and column."""

import json

import pytest

from toolrl.data.io import DataError
from toolrl.eval.benchmarks import detect_schema, load_benchmark, load_humaneval
from toolrl.rewards.registry import grader_kind


def test_each_schema_loads_with_its_data_source_and_prompt(bench_files):
    aime24 = load_benchmark("aime24", bench_files["aime24"])
    assert [s.id for s in aime24] == ["2024-I-1", "2024-I-2"]
    assert aime24[0].ground_truth == "7" and aime24[0].data_source == "aime24"
    text = aime24[0].messages[0]["content"]
    assert text.startswith("Solve the following math problem") and "What is 3 + 4?" in text
    assert "code_interpreter" in text and text.endswith("\\boxed{answer}.")

    aime25 = load_benchmark("aime25", bench_files["aime25"])
    assert aime25[0].ground_truth == "\\frac{3}{4}" and aime25[0].data_source == "aime25"

    gpqa = load_benchmark("gpqa", bench_files["gpqa"])
    assert gpqa[0].ground_truth == "B" and grader_kind(gpqa[0].data_source) == "choice"
    assert gpqa[0].messages[0]["content"].startswith("Answer the following Chemistry question")
    assert gpqa[0].messages[0]["content"].endswith("\\boxed{X}.")

    lcb = load_benchmark("lcb", bench_files["lcb"])
    assert lcb[0].id == "abc001" and grader_kind(lcb[0].data_source) == "code"
    assert lcb[0].ground_truth["outputs"] == ["3\n", "7\n"]
    lcb_prompt = lcb[0].messages[0]["content"]
    assert "```python\n# your code\n```" in lcb_prompt
    # Only the first test is shown: the others stay hidden from the model.
    assert (
        "Example input:\n1 2\n" in lcb_prompt and "7" not in lcb_prompt.split("Expected output:")[1]
    )


def test_parquet_files_load_too(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "aime.parquet"
    pq.write_table(pa.table({"Problem": ["1+1?"], "Answer": [2]}), path)
    [sample] = load_benchmark("aime24", path)
    assert sample.ground_truth == "2" and sample.id == "aime:0"


def test_humaneval_comes_from_the_package():
    samples = load_humaneval()
    assert len(samples) == 164 and samples[0].id == "HumanEval/0"
    assert samples[0].ground_truth["entry_point"] == "has_close_elements"
    assert load_benchmark("humaneval")[163].id == "HumanEval/163"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"Problem": "x", "Answer": 1}, {"Problem": "y"}], r"row 2: missing column `Answer`"),
        ([{"problem": "p", "solution": "BC", "domain": "d"}], r"row 1: column `solution` must be one option letter"),
        ([{"problem": "p", "reward_model": "{not json"}], r"row 1: column `reward_model` is not valid JSON"),
        ([{"problem": "p", "reward_model": "{}"}], r"row 1: column `reward_model` needs `ground_truth`"),
        ([{"question": "p"}], r"row 1: columns \['question'\] fit no benchmark schema"),
    ],
)  # fmt: skip
def test_malformed_files_name_file_row_and_column(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=message) as err:
        load_benchmark("bench", path)
    assert str(path) in str(err.value)


def test_detect_schema_and_missing_file(tmp_path, bench_files):
    assert detect_schema(bench_files["aime25"]) == "aime25"
    with pytest.raises(DataError, match="no such file"):
        load_benchmark("aime24", tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="needs a file"):
        load_benchmark("aime24")
