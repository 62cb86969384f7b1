"""`toolrl eval` end to end on the tiny model, over small files in every schema; resuming."""

import json

import pytest

from toolrl.cli import main
from toolrl.commands.eval import parse_bench


def test_parse_bench():
    assert parse_bench(["a=x.jsonl", "humaneval"]) == {"a": "x.jsonl", "humaneval": None}
    for bad in (["a"], ["=x"], ["a="], ["a=x", "a=y"]):
        with pytest.raises(ValueError):
            parse_bench(bad)


def eval_args(tiny_dir, bench_files, out, k=2):
    args = ["eval", "--model", str(tiny_dir), "--out", str(out), "--k", str(k)]
    args += ["--temperature", "1.0", "--top-p", "0.6", "--limit", "2", "--bench", "humaneval"]
    for name, path in bench_files.items():
        args += ["--bench", f"{name}={path}"]
    return [
        *args,
        "rollout.max_response_length=40",
        "rollout.max_turns=2",
        "reward.overlong_buffer=8",
    ]


def test_toolrl_eval_end_to_end_and_resume(tiny_dir, bench_files, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(eval_args(tiny_dir, bench_files, out)) == 0
    names = ["humaneval", *bench_files]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == names
    for name in names:
        records = (out / name / "samples.jsonl").read_text().splitlines()
        assert len(records) == 4  # 2 problems × k=2
        record = json.loads(records[0])
        assert {
            "prompt",
            "response",
            "pred",
            "score",
            "acc",
            "grades",
            "tool_calls",
            "stop_reason",
        } <= record.keys()
        metrics = summary[name]["metrics"]
        assert {
            "acc/avg@2",
            "acc/pass@2",
            "acc/maj@2",
            "tool/calls_per_response",
            "response_length/mean",
        } <= metrics.keys()
        assert 0 < metrics["response_length/mean"] <= 40
    assert set(
        json.loads((out / "aime24/samples.jsonl").read_text().splitlines()[0])["grades"]
    ) == {"strict", "equivalent"}
    table = (out / "summary.md").read_text()
    assert "| lcb | 2 | code (official execution) |" in table
    assert "| humaneval | 2 | code (isolated execution) |" in table
    before = {name: (out / name / "samples.jsonl").read_text() for name in names}
    capsys.readouterr()

    assert main(eval_args(tiny_dir, bench_files, out)) == 0
    printed = capsys.readouterr().out
    assert printed.count("2 already done") == len(names)
    assert {name: (out / name / "samples.jsonl").read_text() for name in names} == before

    assert main(eval_args(tiny_dir, bench_files, out, k=3)) == 2  # other settings: refused
    assert "different settings" in capsys.readouterr().err


def test_a_bad_code_execution_is_a_clear_error(tmp_path, capsys):
    args = ["eval", "--model", str(tmp_path), "--bench", "lcb=x.jsonl", "--out", str(tmp_path)]
    assert main([*args, "eval.code_execution=offical"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "`eval.code_execution` must be one of 'official', 'isolated'" in err
    assert "Traceback" not in err
