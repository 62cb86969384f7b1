"""Data-parallel updates equal single-process ones: 2 gloo ranks under Ray vs one process."""

import dataclasses

import pytest
import torch

from toolrl.distributed.launch import Placement, start_ranks
from toolrl.trainers.parallel import shard_rows
from toolrl.trainers.rl import PolicyBatch
from toolrl.trainers.rl_setup import build_rl_trainer

from .conftest import EchoTool, parity_reward


@pytest.mark.parametrize("count,world", [(8, 2), (7, 2), (3, 4), (0, 2), (5, 1)])
def test_shards_cover_the_rows_once_in_order(count, world):
    rows = slice(10, 10 + count)
    shards = [shard_rows(rows, r, world) for r in range(world)]
    covered = [i for s in shards for i in range(s.start, s.stop)]
    assert covered == list(range(10, 10 + count))
    sizes = [s.stop - s.start for s in shards]
    assert max(sizes) - min(sizes) <= 1


def update_once(config, trajectories, advantages, distributed: bool):
    """One `update_policy` on a fixed batch: each optimizer step's gradients, the metrics and
    the parameters after it."""
    from toolrl.distributed.data_parallel import ProcessGroup

    torch.manual_seed(0)
    parallel = ProcessGroup() if distributed else None
    trainer, _ = build_rl_trainer(
        config, tools=[EchoTool()], reward_fn=parity_reward, parallel=parallel
    )
    grads, real_step = [], trainer.optimizer.step

    def spy(*args, **kwargs):
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        return real_step(*args, **kwargs)

    trainer.optimizer.step = spy
    batch = PolicyBatch(trainer.collate(trajectories), advantages)
    trainer.fill_reference_logprobs(batch)
    metrics = trainer.update_policy(batch)
    params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    return grads, metrics, params


def fixed_batch(config):
    """A real rollout of the tiny model, scored, with GRPO advantages (made once, here)."""
    trainer, _ = build_rl_trainer(config, tools=[EchoTool()], reward_fn=parity_reward)
    trajectories = trainer.rollout.run(trainer.prompts.batch(0), config.rollout.n, seed=0)
    parity_reward(trajectories)
    return trajectories, trainer.advantages(trajectories)


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_loss_gradients_and_update(rl_config, ray_cluster):
    ranks = start_ranks(Placement(2, 0, 0, "gloo", {"num_cpus": 0.01}))
    try:
        for mode in ("token-mean", "seq-mean-token-mean"):
            config = dataclasses.replace(
                rl_config, algorithm=dataclasses.replace(rl_config.algorithm, loss_agg_mode=mode)
            )
            trajectories, advantages = fixed_batch(config)
            assert (advantages > 0).any() and (advantages < 0).any()
            local = update_once(config, trajectories, advantages, distributed=False)
            remote = ray_cluster.get(
                [r.run.remote(update_once, config, trajectories, advantages, True) for r in ranks]
            )
            for grads, metrics, params in remote:
                assert len(grads) == len(local[0]) == 2  # two mini-batches, two optimizer steps
                for step_grads, local_grads in zip(grads, local[0], strict=True):
                    for name, grad in local_grads.items():
                        torch.testing.assert_close(step_grads[name], grad, rtol=1e-4, atol=1e-6)
                for key in (
                    "actor/pg_loss",
                    "actor/entropy",
                    "actor/pg_clipfrac",
                    "actor/grad_norm",
                ):
                    assert metrics[key] == pytest.approx(local[1][key], rel=1e-4, abs=1e-6), key
                # Adam's step is about lr·g/|g|: where |g| is near its eps (1e-8), gradients
                # equal up to rounding still give steps that differ by a fraction of lr.
                lr = config.trainer.lr
                for name, value in local[2].items():
                    torch.testing.assert_close(params[name], value, rtol=0, atol=0.05 * lr)
    finally:
        for r in ranks:
            ray_cluster.kill(r)
