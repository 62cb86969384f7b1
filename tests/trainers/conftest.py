"""RL test fixtures: a tiny training set, a stand-in tool and a scripted reward."""

import asyncio
import json

import pytest

from toolrl.chat import CODE_INTERPRETER_SCHEMA
from toolrl.config import load_config
from toolrl.tools.base import ToolResult


class EchoTool:
    """Deterministic stand-in for the code interpreter (the real one is tested with the sandbox)."""

    name = "code_interpreter"
    schema = CODE_INTERPRETER_SCHEMA

    async def call(self, arguments):
        await asyncio.sleep(0)
        return ToolResult(arguments["code"][::-1], "success")


def parity_reward(trajectories):
    """+1 when the first sampled token is even, −1 otherwise: a signal the policy can learn."""
    for t in trajectories:
        good = t.response_ids[0] % 2 == 0
        t.reward = 1.0 if good else -1.0
        t.reward_info = {"score": t.reward, "acc": good}


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


def tiny_rl_config(tiny_dir, rl_data, out_dir, *overrides: str):
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
            f"trainer.output_dir={out_dir}",
            "trainer.run_name=test",
            "trainer.total_steps=3",
            "trainer.save_every=1",
            "trainer.loggers=[jsonl]",
            *overrides,
        ],
    )


@pytest.fixture
def rl_config(tiny_dir, rl_data, tmp_path):
    return tiny_rl_config(tiny_dir, rl_data, tmp_path / "runs")
