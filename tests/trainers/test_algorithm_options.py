"""The neighbouring papers' options in the RL step on the tiny model: CISPO and AEPO's loss move
the policy the advantage's way, GRPO-RoC rolls out oversample·n and trains on n a group."""

from __future__ import annotations

import pytest
import torch

from toolrl.config import ConfigError, load_config
from toolrl.trainers.rl_setup import build_rl_trainer

from .conftest import EchoTool, parity_reward, tiny_rl_config
from .test_rl import sequence_logprob


@pytest.mark.parametrize("loss", ["cispo", "aepo"])
def test_the_loss_moves_the_policy_in_the_direction_of_the_advantage(
    tiny_dir, rl_data, tmp_path, loss
):
    config = tiny_rl_config(tiny_dir, rl_data, tmp_path, f"algorithm.policy_loss={loss}")
    trainer, _ = build_rl_trainer(config, tools=[EchoTool()], reward_fn=parity_reward)
    original, captured = trainer.update_policy, {}

    def spy(batch):
        captured.update(tokens=batch.tokens, advantages=batch.advantages.clone())
        captured["before"] = sequence_logprob(trainer.model, batch.tokens)
        return original(batch)

    trainer.update_policy = spy
    metrics = trainer.step(0)
    change = sequence_logprob(trainer.model, captured["tokens"]) - captured["before"]
    adv = captured["advantages"]
    assert (adv > 0).any() and (adv < 0).any(), "the test needs both signs of advantage"
    assert change[adv > 0].mean() > 0 > change[adv < 0].mean()
    assert torch.isfinite(torch.tensor(metrics["actor/pg_loss"]))


def test_aepo_gets_the_policys_entropy(tiny_dir, rl_data, tmp_path, monkeypatch):
    config = tiny_rl_config(tiny_dir, rl_data, tmp_path, "algorithm.policy_loss=aepo")
    trainer, _ = build_rl_trainer(config, tools=[EchoTool()], reward_fn=parity_reward)
    seen = []
    inner = trainer.policy_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["entropy"])
        return inner(*args, **kwargs)

    trainer.policy_loss = spy
    trainer.step(0)
    assert seen and all(not e.requires_grad and (e >= 0).all() for e in seen)


def test_roc_rolls_out_oversample_n_and_trains_on_n_per_group(tiny_dir, rl_data, tmp_path):
    config = tiny_rl_config(
        tiny_dir, rl_data, tmp_path, "algorithm.roc.enabled=true", "algorithm.roc.oversample=2"
    )
    trainer, _ = build_rl_trainer(config, tools=[EchoTool()], reward_fn=parity_reward)
    asked, trained = [], []
    run, update = trainer.rollout.run, trainer.update_policy
    trainer.rollout.run = lambda samples, n, seed: asked.append(n) or run(samples, n, seed=seed)
    trainer.update_policy = lambda batch: trained.append(batch) or update(batch)
    metrics = trainer.step(0)
    assert asked == [8]  # 2 × rollout.n
    assert len(trainer.last_trajectories) == 16  # 2 prompts × 8, all in the rollout metrics
    kept_groups = 2 - metrics["roc/groups_dropped_uniform"]
    assert metrics["rollout/trained_trajectories"] == 4 * kept_groups
    assert metrics["roc/kept_trajectories"] == 4 * kept_groups
    if trained and trained[0] is not None:
        assert len(trained[0]) == 4 * kept_groups


def test_bad_settings_of_the_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"algorithm\.roc\.oversample"):
        load_config(None, ["algorithm.roc.enabled=true", "algorithm.roc.oversample=1"])
    with pytest.raises(ConfigError, match="cispo_clip_low"):
        load_config(None, ["algorithm.cispo_clip_low=1.5"])
    with pytest.raises(ConfigError, match="policy_loss"):
        load_config(None, ["algorithm.policy_loss=cispoo"])
