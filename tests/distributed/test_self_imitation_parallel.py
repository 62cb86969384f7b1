"""The self-imitation replay under data parallelism equals the single-process one."""

import pytest
import torch

from toolrl.distributed.launch import Placement, start_ranks
from toolrl.trainers.rl_setup import build_rl_trainer
from toolrl.trainers.self_imitation import ReplayEntry

from .conftest import EchoTool, parity_reward

ENTRIES = [  # 5 rows, 4 a mini-batch: the second mini-batch leaves rank 1 without rows
    ReplayEntry(
        [5, 6, 7],
        [8 + i, 9, 10 + i][: 2 + i % 2],
        [1, 0, 1][: 2 + i % 2],
        [-2.0, 0.0, -1.5][: 2 + i % 2],
        1.0 - 0.2 * i,
        0,
    )
    for i in range(5)
]


def replay_once(config, distributed: bool):
    """One replay of ENTRIES: each optimizer step's gradients, and the replay's metrics."""
    from toolrl.distributed.data_parallel import ProcessGroup
    from toolrl.trainers.self_imitation import replay

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
    metrics = replay(trainer, ENTRIES, baseline=-0.5, weight=0.5)
    return grads, metrics


@pytest.mark.slow
def test_two_gloo_ranks_replay_as_one_process(rl_config, ray_cluster):
    ranks = start_ranks(Placement(2, 0, 0, "gloo", {"num_cpus": 0.01}))
    try:
        local = replay_once(rl_config, distributed=False)
        remote = ray_cluster.get([r.run.remote(replay_once, rl_config, True) for r in ranks])
        for grads, metrics in remote:
            assert len(grads) == len(local[0]) == 2  # two mini-batches, two optimizer steps
            for step_grads, local_grads in zip(grads, local[0], strict=True):
                for name, grad in local_grads.items():
                    torch.testing.assert_close(step_grads[name], grad, rtol=1e-4, atol=1e-6)
            for key in ("spear/sil_loss", "spear/grad_norm", "spear/replayed"):
                assert metrics[key] == pytest.approx(local[1][key], rel=1e-4, abs=1e-6), key
    finally:
        for r in ranks:
            ray_cluster.kill(r)
