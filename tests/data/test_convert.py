"""verl parquet <-> toolrl jsonl: exact round trips both ways, and errors that name the place."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolrl.cli import main
from toolrl.data.convert import (
    JSON_COLUMNS_KEY,
    convert,
    jsonl_to_parquet,
    parquet_to_jsonl,
    same_json,
    schema_path,
)
from toolrl.data.io import DataError, read_rows
from toolrl.data.rl import load_rl_samples


def verl_table() -> pa.Table:
    """A verl-style RL table: nested structs, a list of structs, a JSON-string column, metadata."""
    rows = [
        {
            "data_source": "aime",
            "prompt": [{"role": "user", "content": "What is 6 * 7? Use \\boxed{}."}],
            "ability": "math",
            "reward_model": {"ground_truth": "42", "style": "rule"},
            "extra_info": {"index": 0, "split": "train", "tags": ["a", "b"], "score": 0.5},
            "tests": json.dumps({"inputs": ["1\n"], "outputs": ["2\n"]}),
        },
        {
            "data_source": "aime",
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Écris 1+1 ∑ 🙂"},
            ],
            "ability": "math",
            "reward_model": {"ground_truth": "2", "style": "rule"},
            "extra_info": {"index": 1, "split": "train", "tags": [], "score": None},
            "tests": None,
        },
    ]
    schema = pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
            (
                "extra_info",
                pa.struct(
                    [
                        ("index", pa.int32()),
                        ("split", pa.large_string()),
                        ("tags", pa.list_(pa.string())),
                        ("score", pa.float32()),
                    ]
                ),
            ),
            ("tests", pa.string()),
        ],
        metadata={b"huggingface": b'{"info": {"features": {}}}'},
    )
    return pa.Table.from_pylist(rows, schema=schema)


def test_parquet_to_jsonl_to_parquet_is_exact(tmp_path):
    pq.write_table(verl_table(), tmp_path / "train.parquet")
    table = pq.read_table(tmp_path / "train.parquet")
    convert(tmp_path / "train.parquet", tmp_path / "train.jsonl")
    assert schema_path(tmp_path / "train.jsonl").is_file()
    # The jsonl is ordinary toolrl RL data: the RL loader reads it.
    samples = load_rl_samples(tmp_path / "train.jsonl")
    assert [s.ground_truth for s in samples] == ["42", "2"]
    assert samples[1].messages[1]["content"] == "Écris 1+1 ∑ 🙂"
    convert(tmp_path / "train.jsonl", tmp_path / "back.parquet")
    back = pq.read_table(tmp_path / "back.parquet")
    assert back.schema.equals(table.schema, check_metadata=True)
    assert back.equals(table)


def test_jsonl_to_parquet_to_jsonl_is_exact(tmp_path):
    rows = [
        {
            "data_source": "lcb",
            "prompt": [{"role": "user", "content": "code"}],
            # a JSON string in the source stays a string
            "reward_model": json.dumps({"ground_truth": json.dumps({"inputs": [1]})}),
            # keys that vary between rows and ground truths of mixed types cannot be Arrow structs
            "extra_info": {"index": 0, "only_here": {"deep": [1, 2.5, None]}},
            "mixed": "a string",
            "ints": 1,
        },
        {
            "data_source": "lcb",
            "prompt": [{"role": "user", "content": "more"}],
            "reward_model": json.dumps({"ground_truth": "x"}),
            "extra_info": {"index": 1},
            "mixed": ["a", "list"],
            "ints": 2,
            "sometimes": None,  # present (as null) in one row only
        },
    ]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    report = jsonl_to_parquet(src, tmp_path / "rows.parquet")
    assert set(report.json_columns) == {"extra_info", "mixed", "sometimes"}
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.schema.field("ints").type == pa.int64()
    assert table.schema.field("prompt").type.value_type.num_fields == 2  # still a list of structs
    assert json.loads(table.schema.metadata[JSON_COLUMNS_KEY]) == sorted(report.json_columns)
    parquet_to_jsonl(tmp_path / "rows.parquet", tmp_path / "again.jsonl")
    again = [row for _, row in read_rows(tmp_path / "again.jsonl")]
    assert len(again) == len(rows)
    for before, after in zip(rows, again, strict=True):
        assert same_json(before, after), (before, after)


def test_ints_and_floats_are_not_confused(tmp_path):
    rows = [{"x": 1, "y": 1.0, "z": True}, {"x": 2, "y": 2.5, "z": False}]
    src = tmp_path / "n.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    jsonl_to_parquet(src, tmp_path / "n.parquet")
    types = pq.read_table(tmp_path / "n.parquet").schema
    assert (str(types.field("x").type), str(types.field("y").type)) == ("int64", "double")
    parquet_to_jsonl(tmp_path / "n.parquet", tmp_path / "m.jsonl")
    back = [row for _, row in read_rows(tmp_path / "m.jsonl")]
    assert all(same_json(a, b) for a, b in zip(rows, back, strict=True))
    assert type(back[0]["y"]) is float and type(back[0]["x"]) is int


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["p", "q", "r"]), json_values, min_size=1),
        min_size=1,
        max_size=4,
    )
)
def test_any_json_rows_round_trip(tmp_path, rows):
    src = tmp_path / "h.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    schema_path(src).unlink(missing_ok=True)
    jsonl_to_parquet(src, tmp_path / "h.parquet")
    parquet_to_jsonl(tmp_path / "h.parquet", tmp_path / "h2.jsonl")
    back = [row for _, row in read_rows(tmp_path / "h2.jsonl")]
    assert len(back) == len(rows) and all(same_json(a, b) for a, b in zip(rows, back, strict=True))
    # and the other way: the parquet written from the jsonl comes back equal
    convert(tmp_path / "h2.jsonl", tmp_path / "h3.parquet")
    assert pq.read_table(tmp_path / "h3.parquet").equals(pq.read_table(tmp_path / "h.parquet"))


def test_rows_without_columns_are_refused(tmp_path):
    (tmp_path / "e.jsonl").write_text("{}\n{}\n")
    with pytest.raises(DataError, match=r"e\.jsonl: the rows have no columns"):
        jsonl_to_parquet(tmp_path / "e.jsonl", tmp_path / "e.parquet")


def test_unsupported_arrow_types_are_refused_by_column(tmp_path):
    table = pa.table({"blob": pa.array([b"\x00"], type=pa.binary())})
    pq.write_table(table, tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: column `blob`"):
        parquet_to_jsonl(tmp_path / "b.parquet", tmp_path / "b.jsonl")


def test_cli_validates_rows_and_names_file_row_column(tmp_path, capsys):
    rows = [
        {
            "prompt": [{"role": "user", "content": "q"}],
            "data_source": "d",
            "reward_model": {"ground_truth": "1"},
        },
        {
            "prompt": [{"role": "user", "content": "q"}],
            "data_source": "d",
            "reward_model": {"answer": "1"},
        },
    ]
    src = tmp_path / "bad.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "convert", str(src), str(tmp_path / "bad.parquet")]) == 2
    assert "bad.jsonl: row 2: column `reward_model`" in capsys.readouterr().err
    assert main(["data", "convert", "--no-validate", str(src), str(tmp_path / "bad.parquet")]) == 0
    assert main(["data", "convert", str(src), str(tmp_path / "bad.csv")]) == 2
