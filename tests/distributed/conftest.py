"""Ray test set-up: one local 2-CPU cluster for the whole package, the tiny RL run's config,
and stand-ins for the tool and the reward that Ray can ship to its workers."""

import asyncio
import json
import sys
from dataclasses import dataclass

import pytest

from toolrl.config import load_config
from toolrl.template_check import TOOLS

ray = pytest.importorskip("ray")


@dataclass
class Result:
    text: str
    status: str = "success"
    elapsed_s: float = 0.0


class EchoTool:
    """Deterministic stand-in for the code interpreter."""

    name = "code_interpreter"
    schema = TOOLS[0]

    async def call(self, arguments):
        await asyncio.sleep(0)
        return Result(arguments["code"][::-1])


def parity_reward(trajectories):
    """+1 when the first sampled token is even, −1 otherwise."""
    for t in trajectories:
        good = t.response_ids[0] % 2 == 0
        t.reward = 1.0 if good else -1.0
        t.reward_info = {"score": t.reward, "acc": good}


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster on 2 CPUs; this module's helpers travel to workers by value."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def rl_data(tmp_path):
    path = tmp_path / "train.jsonl"
    with path.open("w") as f:
        for i in range(6):
            row = {
                "prompt": [{"role": "user", "content": f"Add {i} and {i + 1}."}],
                "data_source": "toy",
                "reward_model": {"ground_truth": str(2 * i + 1)},
            }
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def rl_config(tiny_dir, rl_data, tmp_path):
    """2 prompts × 4 rollouts a step, 2 mini-batches of 4 rows, micro-batches of 3."""
    return load_config(
        None,
        [
            f"model.path={tiny_dir}",
            "model.dtype=float32",
            f"data.train_files=[{rl_data}]",
            "data.train_batch_size=2",
            "rollout.engine=hf",
            "rollout.n=4",
            "rollout.max_response_length=24",
            "rollout.max_turns=2",
            "reward.overlong_buffer=8",
            "trainer.ppo_mini_batch_size=1",
            "trainer.micro_batch_size=3",
            "trainer.lr=1e-3",
            f"trainer.output_dir={tmp_path / 'runs'}",
            "trainer.run_name=test",
            "trainer.total_steps=1",
            "trainer.save_every=1",
            "trainer.loggers=[jsonl]",
            "trainer.gpus_per_node=0",
        ],
    )
