"""Bad input on the command line: a clear error naming the file, row or key, exit code 2, no
traceback, and no partial output."""

import json

import pytest

from toolrl.cli import main
from toolrl.data.io import DataError, read_rows

ROW = {
    "prompt": [{"role": "user", "content": "Add 1 and 2."}],
    "data_source": "toy",
    "reward_model": {"ground_truth": "3"},
}


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "train.jsonl"
    good.write_text(json.dumps(ROW) + "\n")
    fake = tmp_path / "fake.parquet"
    fake.write_text("this is text\nnot parquet\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    return {"good": good, "fake": fake, "empty": empty, "runs": tmp_path / "runs"}


def train_args(command, tiny_dir, files, data, *overrides):
    return [
        command,
        "tiny",
        f"model.path={tiny_dir}",
        f"data.train_files=[{data}]",
        f"trainer.output_dir={files['runs']}",
        "trainer.run_name=r",
        "trainer.total_steps=1",
        "trainer.loggers=[jsonl]",
        "eval.benchmarks={}",
        *overrides,
    ]


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("command", ["rl", "sft"])
def test_text_posing_as_parquet_is_named_in_training(command, tiny_dir, files, capsys):
    assert main(train_args(command, tiny_dir, files, files["fake"])) == 2
    assert f"{files['fake']}: not a readable parquet file" in error_of(capsys)
    assert not files["runs"].exists()


def test_text_posing_as_parquet_is_named_in_rollout(files, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    argv = ["rollout", "--model", "tiny", "--data", str(files["fake"]), "--out", str(out)]
    assert main([*argv, "rollout.engine=scripted"]) == 2
    assert f"{files['fake']}: not a readable parquet file" in error_of(capsys)
    assert not out.exists()


def test_empty_data_file_says_it_is_empty(tiny_dir, files, tmp_path, capsys):
    assert main(train_args("rl", tiny_dir, files, files["empty"])) == 2
    err = error_of(capsys)
    assert f"{files['empty']}: no rows" in err and "max_prompt_length" not in err
    out = tmp_path / "out.jsonl"
    argv = ["rollout", "--model", "tiny", "--data", str(files["empty"]), "--out", str(out)]
    assert main([*argv, "rollout.engine=scripted"]) == 2
    assert f"{files['empty']}: no rows" in error_of(capsys)
    assert not out.exists()


def test_rollout_refuses_a_negative_n(files, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    argv = ["rollout", "--model", "tiny", "--data", str(files["good"]), "--out", str(out)]
    assert main([*argv, "--n", "-1", "rollout.engine=scripted"]) == 2
    assert "--n must be >= 1" in error_of(capsys)
    assert not out.exists()


@pytest.mark.parametrize("command", ["rollout", "eval"])
@pytest.mark.parametrize("model", ["missing", "empty_dir"])
def test_a_model_path_without_a_model_is_named(command, model, files, tmp_path, capsys):
    path = tmp_path / model
    if model == "empty_dir":
        path.mkdir()
    out = tmp_path / "out"
    data = ["--data", str(files["good"])] if command == "rollout" else ["--bench", f"x={files['good']}"]  # fmt: skip
    assert main([command, "--model", str(path), *data, "--out", str(out)]) == 2
    err = error_of(capsys)
    assert str(path) in err and "Repo id" not in err
    assert not out.exists()


def test_eval_k_zero_is_refused(tiny_dir, files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--model", str(tiny_dir), "--bench", f"x={files['good']}", "--out", str(out)]
    assert main([*argv, "--k", "0"]) == 2
    assert "`eval.k` (--k) must be >= 1, got 0" in error_of(capsys)
    assert not out.exists()


@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_learning_rate_that_is_not_positive_is_refused(value, tiny_dir, files, capsys):
    assert main(train_args("rl", tiny_dir, files, files["good"], f"trainer.lr={value}")) == 2
    assert "`trainer.lr` must be > 0" in error_of(capsys)
    assert not files["runs"].exists()


def test_rows_are_numbered_from_one_as_editors_count_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROW) + "\n\n" + '{"prompt": 3\n')
    with pytest.raises(DataError, match=r"rows\.jsonl: row 3: not valid JSON"):
        list(read_rows(path))
    path.write_bytes(json.dumps(ROW).encode() + b"\n" + b'{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"rows\.jsonl: row 2: not UTF-8"):
        list(read_rows(path))


def test_sample_ids_keep_counting_from_zero(tmp_path):
    from toolrl.data.rl import load_rl_samples

    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    assert [s.id for s in load_rl_samples(path)] == ["rows:0", "rows:1"]
