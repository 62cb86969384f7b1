"""Ray test set-up: one local 2-CPU cluster for the whole package, and the trainer tests' tiny
RL run (its stand-in tool and reward, shipped to Ray's workers by value)."""

import sys

import pytest

from ..trainers.conftest import EchoTool, parity_reward, rl_data, tiny_rl_config

ray = pytest.importorskip("ray")

__all__ = ["EchoTool", "parity_reward", "rl_data"]  # the tests import them from here


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster on 2 CPUs; the test helpers travel to workers by value."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[EchoTool.__module__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def rl_config(tiny_dir, rl_data, tmp_path):
    """The trainer tests' tiny RL run, one step, on CPUs (gloo) under Ray."""
    return tiny_rl_config(
        tiny_dir, rl_data, tmp_path / "runs", "trainer.total_steps=1", "cluster.gpus_per_node=0"
    )
