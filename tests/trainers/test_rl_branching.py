"""`toolrl rl` with branching rollouts (ARPO, AEPO) from the command line."""

import json

import pytest

from toolrl.cli import main


def rl_args(tiny_dir, rl_data, runs, *overrides):
    return [
        "rl",
        "tiny",
        f"model.path={tiny_dir}",
        f"data.train_files=[{rl_data}]",
        "data.train_batch_size=2",
        "rollout.n=4",
        "rollout.max_response_length=48",
        "rollout.max_tokens_per_turn=24",
        "rollout.max_turns=2",
        "reward.overlong_buffer=8",
        "trainer.ppo_mini_batch_size=2",
        "trainer.total_steps=2",
        f"trainer.output_dir={runs}",
        "trainer.loggers=[jsonl]",
        *overrides,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["arpo", "aepo"])
def test_rl_runs_with_branching_rollouts(tiny_dir, rl_data, tmp_path, mode):
    args = rl_args(tiny_dir, rl_data, tmp_path, f"trainer.run_name={mode}")
    assert main([*args, f"rollout.branching.mode={mode}"]) == 0
    rows = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").open()]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["rollout/trained_trajectories"] == 8  # 2 prompts × rollout.n, every step
        # per prompt: branches + global samples that took an ended one's place = n − N
        spent = row["rollout/branch/count"] / 2 + row["rollout/branch/filled_mean"]
        assert spent == pytest.approx(4 - row["rollout/branch/initial_samples_mean"])


def test_a_bad_branching_config_is_exit_2_without_a_traceback(tiny_dir, rl_data, tmp_path, capsys):
    args = rl_args(tiny_dir, rl_data, tmp_path, "trainer.run_name=bad")
    assert main([*args, "rollout.branching.mode=arpo", "rollout.branching.initial_samples=4"]) == 2
    err = capsys.readouterr().err
    assert "rollout.branching.initial_samples" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
