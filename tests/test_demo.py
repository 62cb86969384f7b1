"""`toolrl demo --fast` (the README's main job on a small budget) runs every stage for real and
leaves the artefacts the report and a newcomer rely on."""

import json

import pytest

from toolrl.cli import main as cli_main


@pytest.mark.slow
def test_fast_demo_runs_every_stage_leaves_its_artefacts_and_caches(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "stages.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["base", "sft", "rl"]
    assert record["benchmarks"] == ["math", "choice", "code"]
    for stage in record["stages"]:
        for bench in record["benchmarks"]:
            summary = stage["summary"][bench]
            assert summary["k"] == record["k"] and summary["num_problems"] > 0
            for key in ("avg", "pass", "maj"):
                assert 0.0 <= summary["metrics"][f"acc/{key}@{record['k']}"] <= 1.0
            assert (out / stage["samples_dir"] / bench / "samples.jsonl").is_file()
    assert set(record["timings"]) >= {"tasks", "model", "collect", "sft", "rl", "eval rl"}
    # The teacher really ran the sandbox, and its trajectories became SFT rows that trained.
    stats = json.loads((out / "data" / "sft.stats.json").read_text())
    assert stats["kept"] > 0 and stats["kept_rows"]["tool/success_rate"] > 0.5
    sft_metrics = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").open()]
    assert sft_metrics and all(m["train/loss"] > 0 for m in sft_metrics)
    # RL ran its steps through the sandbox and wrote the run directory the report reads.
    rl_metrics = [json.loads(line) for line in (out / "rl" / "metrics.jsonl").open()]
    assert [m["step"] for m in rl_metrics] == [1, 2]
    assert (out / "rl" / "rollouts" / "step_2.jsonl").is_file()
    assert (out / "rl_model" / "config.json").is_file()
    assert "avg@" in printed and "rl" in printed
    # A second run reuses the data, the teacher's rows, SFT and the base and SFT evaluations.
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 0
    again = json.loads((out / "stages.json").read_text())
    for stage in ("collect", "sft", "eval base", "eval sft"):
        assert again["timings"][stage] < max(1.0, record["timings"][stage] / 3), stage
    assert again["stages"][1]["summary"] == record["stages"][1]["summary"]
    # RL-only changes (group size, sampling temperature, clipping) rerun only RL and its eval.
    rl_only = ["--rl", "rollout.n=3", "rollout.temperature=1.2", "algorithm.clip_ratio_high=0.3"]
    assert cli_main(["demo", "--fast", "--out", str(out), *rl_only]) == 0
    third = json.loads((out / "stages.json").read_text())
    for stage in ("collect", "sft", "eval base", "eval sft"):
        assert third["timings"][stage] < max(1.0, record["timings"][stage] / 3), stage
    rl_config = (out / "rl" / "config.yaml").read_text()
    assert "n: 3" in rl_config and "clip_ratio_high: 0.3" in rl_config
    # ... while a change to what a trajectory may be (its turns) collects the data again.
    assert cli_main(["demo", "--fast", "--out", str(out), "--rl", "rollout.max_turns=3"]) == 0
    fourth = json.loads((out / "stages.json").read_text())
    assert fourth["timings"]["collect"] > 3 * max(0.05, third["timings"]["collect"])
