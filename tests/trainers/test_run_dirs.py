"""A run directory holds one run: a new run never mixes with an old one, and resume reads a
metrics.jsonl whose last line a crash cut short."""

import json

import pytest

from toolrl.cli import main
from toolrl.trainers.checkpoint import RunDirInUse, claim_run_dir
from toolrl.trainers.tracking import MetricsLogger


def old_run(run_dir):
    (run_dir / "checkpoints" / "step_9").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_9" / "trainer_state.pt").write_bytes(b"old")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (8, 9)))


@pytest.mark.parametrize("command", ["rl", "sft"])
def test_a_new_run_into_a_used_run_dir_is_refused(command, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "r"
    old_run(run_dir)
    argv = [command, "tiny", f"trainer.output_dir={tmp_path / 'runs'}", "trainer.run_name=r"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{run_dir} already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == 2  # untouched
    assert main([*argv, "--resume", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_overwrite_moves_the_old_run_aside(tmp_path):
    run_dir = tmp_path / "r"
    old_run(run_dir)
    assert claim_run_dir(run_dir, resume=True) is None and (run_dir / "metrics.jsonl").exists()
    with pytest.raises(RunDirInUse):
        claim_run_dir(run_dir, resume=False)
    aside = claim_run_dir(run_dir, resume=False, overwrite=True)
    assert aside == tmp_path / "r.old-1" and (aside / "checkpoints" / "step_9").is_dir()
    assert not run_dir.exists()
    old_run(run_dir)
    assert claim_run_dir(run_dir, resume=False, overwrite=True) == tmp_path / "r.old-2"
    run_dir.mkdir()
    assert claim_run_dir(run_dir, resume=False) is None  # an empty directory is free


def test_resume_drops_a_torn_last_metrics_line_and_says_so(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 0.5}) for s in (1, 2, 3)]
    path.write_text("\n".join(lines)[:-12])  # the crash cut step 3's line short
    MetricsLogger(tmp_path, ["jsonl"], {}, resume_step=2).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert "metrics.jsonl: line 3: not valid JSON" in capsys.readouterr().err
    path.write_text(lines[0] + '\n{"loss": 1}\n')  # an object without a step is torn too
    MetricsLogger(tmp_path, ["jsonl"], {}, resume_step=2).close()
    assert path.read_text() == lines[0] + "\n"
