"""`cluster.backend=ray`: a full tiny RL step on 2 rollout workers and 2 gloo training ranks."""

import asyncio
import dataclasses

import pytest

from toolrl.config import ConfigError, load_config
from toolrl.distributed.launch import fit_on_backend, placement_of
from toolrl.distributed.sandbox import PooledTool
from toolrl.trainers.checkpoint import latest_checkpoint
from toolrl.trainers.tracking import read_metrics

from .conftest import EchoTool, parity_reward


def test_placement_follows_nodes_gpus_and_ranks():
    cpu = placement_of(load_config(None, ["cluster.gpus_per_node=0", "cluster.ranks_per_node=2"]))
    assert (cpu.world_size, cpu.rollout_workers, cpu.backend) == (2, 2, "gloo")
    gpu = placement_of(load_config(None, ["cluster.nodes=2", "cluster.rollout_workers=4"]))
    assert (gpu.world_size, gpu.rollout_workers, gpu.backend) == (16, 4, "nccl")
    assert gpu.actor_options["num_gpus"] == 0.5  # a rank and a rollout worker share a GPU


def test_negative_worker_counts_are_rejected_by_name():
    with pytest.raises(ConfigError, match=r"cluster\.rollout_workers"):
        load_config(None, ["cluster.rollout_workers=-1"])
    with pytest.raises(ConfigError, match=r"did you mean `cluster\.ranks_per_node`"):
        load_config(None, ["cluster.rank_per_node=2"])


def test_sandbox_pool_spreads_calls_and_masks_a_lost_worker(ray_cluster):
    pool = PooledTool.start(EchoTool, 2, num_cpus=0.01)

    async def calls(k):
        return await asyncio.gather(*(pool.call({"code": f"x{i}"}) for i in range(k)))

    results = asyncio.run(calls(4))
    assert [r.text for r in results] == ["0x", "1x", "2x", "3x"]
    ray_cluster.kill(pool.workers[1])
    results = asyncio.run(calls(2))
    assert [r.status for r in results] == ["success", "infra_error"]


@pytest.mark.slow
def test_a_ray_rl_step_completes_and_checkpoints(rl_config, ray_cluster):
    config = dataclasses.replace(
        rl_config,
        cluster=dataclasses.replace(
            rl_config.cluster, backend="ray", ranks_per_node=2, rollout_workers=2
        ),
    )
    run_dir = fit_on_backend(config, tools=[EchoTool()], reward_fn=parity_reward)
    (metrics,) = read_metrics(run_dir)
    assert metrics["rollout/trained_trajectories"] == 8
    assert metrics["actor/grad_norm"] > 0
    assert latest_checkpoint(run_dir).name == "step_1"
    assert len((run_dir / "rollouts" / "step_1.jsonl").read_text().splitlines()) == 8
