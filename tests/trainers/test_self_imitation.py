"""SPEAR-style self-imitation in the RL step: the replay buffer's bounds and admission, the
tool-call reward curriculum, the replay update, and the buffer in the checkpoint."""

from __future__ import annotations

import pytest
import torch

from toolrl.config.schema import SelfImitationConfig
from toolrl.trainers.checkpoint import STATE_FILE
from toolrl.trainers.rl_setup import build_rl_trainer, fit
from toolrl.trainers.self_imitation import (
    ReplayBuffer,
    ReplayEntry,
    SelfImitation,
    admissible,
    replay,
    replay_batch,
)
from toolrl.trainers.tracking import read_metrics
from toolrl.types import Sample, ToolCall, Trajectory, Turn

from .conftest import EchoTool, parity_reward, tiny_rl_config
from .test_rl import as_overrides, kill_during_step, run_fit

SPEAR = [
    "algorithm.self_imitation.enabled=true",
    "algorithm.self_imitation.buffer_size=2",
    "algorithm.self_imitation.capacity=8",
    "algorithm.self_imitation.require_tool_call=false",  # the tiny model calls no tool
    "algorithm.self_imitation.warmup_steps=2",
]


def entry(step: int, reward: float = 1.0) -> ReplayEntry:
    return ReplayEntry([1, 2], [3, 4], [1, 1], [-0.5, -0.5], reward, step)


def trajectory(reward: float, tool_turns: int, sample: str = "s") -> Trajectory:
    call = ToolCall("code_interpreter", {"code": "1"}, "success", "1")
    turns = [Turn("t", 1, tool_calls=[call]) for _ in range(tool_turns)] + [Turn("a", 1)]
    sample_ = Sample(sample, [], "toy", "1")
    return Trajectory(sample_, [1], [2], [1], [-0.1], turns=turns, reward=reward)


def test_the_buffer_is_bounded_oldest_first_and_drops_stale_entries():
    buffer = ReplayBuffer(capacity=3, baseline_size=3)
    buffer.admit([entry(s) for s in range(5)])
    assert [e.step for e in buffer.entries] == [2, 3, 4]
    buffer.drop_stale(step=6, max_age=3)  # 6 − 2 = 4 > 3 leaves, 6 − 3 = 3 stays
    assert [e.step for e in buffer.entries] == [3, 4]
    buffer.record_groups([1.0, 2.0])
    buffer.record_groups([3.0, 4.0])
    assert list(buffer.group_means) == [2.0, 3.0, 4.0]
    assert buffer.baseline(50) == 3.0


def test_admission_needs_a_positive_advantage_and_a_tool_call():
    ts = [trajectory(1.0, 1), trajectory(-1.0, 1), trajectory(1.0, 0), trajectory(0.0, 2)]
    advantages = torch.tensor([0.5, -0.2, 0.3, 0.0])
    assert admissible(ts, advantages, tool_call=True) == [ts[0]]
    assert admissible(ts, advantages, tool_call=False) == [ts[0], ts[2]]


def test_the_tool_reward_curriculum_shifts_rewards_by_its_weight_at_the_step():
    spear = SelfImitation(SelfImitationConfig(enabled=True, tool_reward_steps=200), seed=0)
    ts = [trajectory(-1.0, 2), trajectory(1.0, 1), trajectory(1.0, 0)]
    spear.shape_rewards(ts, step=99)  # t = 100 of T = 200: μ = 0.5
    assert [t.reward for t in ts] == [-0.9, 1.5, 1.0]
    late = [trajectory(-1.0, 2)]
    spear.shape_rewards(late, step=200)  # past T: μ = 0
    assert late[0].reward == -1.0


def test_buffer_state_round_trips_through_torch_save(tmp_path):
    buffer = ReplayBuffer(capacity=4, baseline_size=3)
    buffer.admit([entry(0, 1.0), entry(1, 0.5)])
    buffer.record_groups([0.25, -1.0])
    torch.save(buffer.state_dict(), tmp_path / "state.pt")
    restored = ReplayBuffer(capacity=4, baseline_size=3)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    assert restored.entries == buffer.entries
    assert list(restored.group_means) == [0.25, -1.0]


def test_a_replay_draws_by_the_step_and_keeps_buffer_order():
    spear = SelfImitation(SelfImitationConfig(enabled=True, buffer_size=4), seed=3)
    eligible = [entry(s) for s in range(7)]
    chosen = spear.choose(eligible, step=5)
    assert len(chosen) == 4  # the largest power of two ≤ 7, within buffer_size
    assert [e.step for e in chosen] == sorted(e.step for e in chosen)
    assert chosen == spear.choose(eligible, step=5)  # what a resumed run draws too
    assert len(spear.choose(eligible[:3], step=5)) == 2


def test_the_default_run_has_no_self_imitation(rl_config):
    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
    assert trainer.self_imitation is None
    assert not [k for k in trainer.step(0) if k.startswith("spear/")]


def spear_trainer(tiny_dir, rl_data, tmp_path, *overrides):
    config = tiny_rl_config(tiny_dir, rl_data, tmp_path / "runs", *SPEAR, *overrides)
    return build_rl_trainer(config, tools=[EchoTool()], reward_fn=parity_reward)[0]


def test_a_replay_trains_on_a_power_of_two_of_the_winners_and_empties_the_buffer(
    tiny_dir, rl_data, tmp_path
):
    trainer = spear_trainer(tiny_dir, rl_data, tmp_path)
    first = trainer.step(0)
    assert first["spear/replayed"] == 0
    assert first["spear/sil_weight"] == pytest.approx(0.5)  # γ(1) with T = 2
    assert first["spear/buffer_size"] == first["spear/admitted"] > 0
    held = [e for e in trainer.self_imitation.buffer.entries]
    second = trainer.step(1)
    baseline = second["spear/baseline"]
    assert second["spear/eligible"] == sum(e.reward > baseline for e in held) > 3
    assert second["spear/replayed"] == 2  # buffer_size; more than 1.5 × 2 were eligible
    assert second["spear/buffer_size"] == second["spear/admitted"]  # emptied, then admitted
    assert second["spear/sil_loss"] < 0 and second["spear/grad_norm"] > 0


def sequence_logprob(trainer, batch):
    from toolrl.trainers.batching import token_logprobs

    with torch.no_grad():
        return (token_logprobs(trainer.model, batch)[0] * batch.loss_mask).sum(-1)


def test_a_replay_makes_the_replayed_trajectories_likelier(tiny_dir, rl_data, tmp_path):
    trainer = spear_trainer(tiny_dir, rl_data, tmp_path)
    trainer.step(0)
    entries = trainer.self_imitation.buffer.entries[:2]
    batch = replay_batch(entries, trainer.tokenizer.pad_token_id or 0)
    before = sequence_logprob(trainer, batch)
    metrics = replay(trainer, entries, baseline=min(e.reward for e in entries) - 1, weight=1.0)
    assert metrics["spear/replayed"] == 2
    assert (sequence_logprob(trainer, batch) > before).all()


def test_the_replay_gradient_is_the_same_for_any_micro_batch_size(tiny_dir, rl_data, tmp_path):
    grads = []
    for micro in (1, 8):
        trainer = spear_trainer(tiny_dir, rl_data, tmp_path / str(micro))
        trainer.config.trainer.micro_batch_size = micro
        trainer.config.trainer.ppo_mini_batch_size = 4  # 16 rows a mini-batch: one update
        entries = [
            ReplayEntry([5, 6, 7], [8 + i, 9, 10 + i], [1, 0, 1], [-2.0, 0.0, -1.5], 1.0, 0)
            for i in range(5)
        ]

        def capture(totals, trainer=trainer):
            grads.append([p.grad.clone() for p in trainer.model.parameters()])
            return {**totals, "actor/grad_norm": 0.0}

        trainer.optimizer_step = capture
        replay(trainer, entries, baseline=0.0, weight=0.5)
    for one, many in zip(*grads, strict=True):
        torch.testing.assert_close(one, many, atol=1e-6, rtol=1e-5)


def test_the_buffer_is_in_the_checkpoint_and_comes_back_on_resume(tiny_dir, rl_data, tmp_path):
    config = tiny_rl_config(tiny_dir, rl_data, tmp_path / "runs", *SPEAR, "trainer.total_steps=1")
    run_dir = fit(config, tools=[EchoTool()], reward_fn=parity_reward)
    state = torch.load(run_dir / "checkpoints" / "step_1" / STATE_FILE, weights_only=False)
    saved = state["self_imitation"]
    assert saved["entries"] and saved["group_means"]
    trainer, start = build_rl_trainer(
        config, resume=True, tools=[EchoTool()], reward_fn=parity_reward
    )
    assert start == 1
    assert trainer.self_imitation.state_dict() == saved


@pytest.mark.slow
def test_kill_and_resume_with_self_imitation_reproduces_the_uninterrupted_run(rl_config, tmp_path):
    base = [*as_overrides(rl_config), *SPEAR, "trainer.total_steps=4"]
    straight = [*base, f"trainer.output_dir={tmp_path / 'a'}"]
    killed = [*base, f"trainer.output_dir={tmp_path / 'b'}"]
    assert run_fit(straight, tmp_path).wait(timeout=300) == 0
    kill_during_step(killed, tmp_path, 2)
    assert run_fit(killed, tmp_path, resume=True).wait(timeout=300) == 0

    a = read_metrics(tmp_path / "a" / "test")
    b = read_metrics(tmp_path / "b" / "test")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("timing/")} for r in rows]  # noqa: E731
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert any(r["spear/replayed"] for r in a[2:])  # the resumed steps replay the saved buffer
    assert strip(a) == strip(b)
