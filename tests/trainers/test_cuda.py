"""SFT and the GRPO-TCR step on a CUDA GPU (`gpu`-marked: skipped without one).

The same contracts as the CPU tests, where a GPU could break them: every tensor on the model's
device, the update in the direction of the advantage, and a resumed run that continues where
the uninterrupted one would be (to float tolerance: CUDA's backward kernels are not bit-exact).
"""

import math

import pytest

from toolrl.trainers.rl_setup import build_rl_trainer, fit
from toolrl.trainers.sft import run_sft
from toolrl.trainers.tracking import read_metrics

from .conftest import EchoTool, parity_reward, tiny_rl_config
from .test_rl import sequence_logprob
from .test_sft import CONVERSATION, sft_config, write_rows

pytestmark = pytest.mark.gpu


def test_sft_on_cuda_lowers_the_assistant_loss(tiny_dir, tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", [CONVERSATION] * 4)
    run_dir = run_sft(sft_config(tiny_dir, tmp_path, data, "trainer.epochs=8"), device="cuda")
    rows = read_metrics(run_dir)
    assert all(math.isfinite(r["train/loss"]) for r in rows)
    assert rows[-1]["train/loss"] < 0.5 * rows[0]["train/loss"]


def test_rl_step_on_cuda_follows_the_advantage(rl_config):
    trainer, _ = build_rl_trainer(
        rl_config, tools=[EchoTool()], reward_fn=parity_reward, device="cuda"
    )
    assert next(trainer.model.parameters()).device.type == "cuda"
    original_update = trainer.update_policy
    captured = {}

    def spy(batch):
        captured.update(
            batch=batch.tokens,
            advantages=batch.advantages,
            before=sequence_logprob(trainer.model, batch.tokens),
        )
        return original_update(batch)

    trainer.update_policy = spy
    metrics = trainer.step(0)
    change = sequence_logprob(trainer.model, captured["batch"]) - captured["before"]
    adv = captured["advantages"]
    assert (adv > 0).any() and (adv < 0).any(), "the test needs both signs of advantage"
    assert change[adv > 0].mean() > 0 > change[adv < 0].mean()
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


def test_resumed_cuda_run_continues_the_uninterrupted_one(tiny_dir, rl_data, tmp_path):
    straight = tiny_rl_config(tiny_dir, rl_data, tmp_path / "a")
    fit(straight, tools=[EchoTool()], reward_fn=parity_reward, device="cuda")
    stopped = tiny_rl_config(tiny_dir, rl_data, tmp_path / "b", "trainer.total_steps=2")
    fit(stopped, tools=[EchoTool()], reward_fn=parity_reward, device="cuda")
    resumed = tiny_rl_config(tiny_dir, rl_data, tmp_path / "b")
    fit(resumed, resume=True, tools=[EchoTool()], reward_fn=parity_reward, device="cuda")

    a = read_metrics(tmp_path / "a" / "test")
    b = read_metrics(tmp_path / "b" / "test")
    assert [r["step"] for r in b] == [1, 2, 3]
    for name in ("critic/score/mean", "response_length/mean", "actor/pg_loss", "actor/entropy"):
        assert b[-1][name] == pytest.approx(a[-1][name], rel=1e-3, abs=1e-5), name
