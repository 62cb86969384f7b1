"""RL data in the Open-AgentRL / verl schema: jsonl and parquet, and errors with file/row/column."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from toolrl.data.io import DataError
from toolrl.data.rl import load_rl_samples

ROW = {
    "prompt": [{"role": "user", "content": "What is 1+1?"}],
    "data_source": "aime",
    "ability": "math",
    "reward_model": {"ground_truth": "2", "style": "rule"},
    "extra_info": {"index": 7, "split": "train"},
}


def test_jsonl_and_parquet_give_the_same_samples(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps(ROW) + "\n\n" + json.dumps({**ROW, "extra_info": {}}) + "\n")
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([ROW, {**ROW, "extra_info": {"index": 8}}]), parquet)
    a, b = load_rl_samples(jsonl), load_rl_samples(parquet)
    assert a[0].id == "7" and a[1].id == "d:2"  # blank line skipped; row numbers are file lines
    assert a[0].messages == b[0].messages == ROW["prompt"]
    assert a[0].ground_truth == b[0].ground_truth == "2"
    assert b[1].id == "8" and b[0].data_source == "aime"


def test_json_string_columns_are_decoded(tmp_path):
    path = tmp_path / "lcb.jsonl"
    row = {
        **ROW,
        "prompt": json.dumps(ROW["prompt"]),
        "reward_model": json.dumps({"ground_truth": {"inputs": ["1"], "outputs": ["2"]}}),
    }
    path.write_text(json.dumps(row) + "\n")
    [s] = load_rl_samples(path)
    assert s.ground_truth == {"inputs": ["1"], "outputs": ["2"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": None}, "row 2: column `prompt` must be a non-empty list"),
        ({"prompt": [{"role": "robot", "content": "x"}]}, "row 2: column `prompt`[0]"),
        ({"data_source": 3}, "row 2: column `data_source`"),
        (
            {"reward_model": {"style": "rule"}},
            "row 2: column `reward_model` must be a mapping with `ground_truth`",
        ),
        (
            {"reward_model": "{not json"},
            "row 2: column `reward_model` is a string but not valid JSON",
        ),
    ],
)
def test_malformed_rows_name_file_row_and_column(tmp_path, change, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, **change}) + "\n")
    with pytest.raises(DataError) as err:
        load_rl_samples(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_column_and_bad_files(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({k: v for k, v in ROW.items() if k != "data_source"}) + "\n")
    with pytest.raises(DataError, match="row 1: missing column `data_source`"):
        load_rl_samples(path)
    path.write_text("{oops\n")
    with pytest.raises(DataError, match="row 1: not valid JSON"):
        load_rl_samples(path)
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "bad.csv").write_text("a,b\n")
        load_rl_samples(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="no such file"):
        load_rl_samples(tmp_path / "missing.jsonl")
