"""Rollout workers as Ray actors: order, exactly-once, and a killed worker replaced mid-step."""

import threading
import time

import pytest

from toolrl.distributed.rollout import RayRollout, RolloutWorker, split_groups
from toolrl.trainers.rl import PromptStream
from toolrl.trainers.rl_setup import load_prompts

from .conftest import EchoTool


def test_split_groups_is_contiguous_and_balanced():
    samples = list(range(5))
    runs = split_groups(samples, 2)
    assert runs == [[0, 1, 2], [3, 4]]
    assert split_groups(samples[:1], 3) == [[0], [], []]


class SlowRolloutWorker(RolloutWorker):
    """A rollout worker whose rollouts take at least `delay` seconds, so a test can kill it
    while one is in flight."""

    def rollout(self, groups, n, seed, delay=1.5):
        time.sleep(delay)
        return super().rollout(groups, n, seed)


def provider(ray, config, worker_cls, num_workers=2):
    def start():
        actor = ray.remote(worker_cls).options(num_cpus=0.01)
        return actor.remote(config.to_dict(), lambda: [EchoTool()])

    return RayRollout(start, num_workers)


def step_samples(config, tiny_tokenizer):
    samples, _ = load_prompts(config, tiny_tokenizer, [EchoTool()])
    return PromptStream(samples, 3, seed=0).batch(0)


def keys(trajectories):
    return [(t.sample.id, t.group_index) for t in trajectories]


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_trajectories_rerun_once(
    rl_config, ray_cluster, tiny_tokenizer
):
    samples = step_samples(rl_config, tiny_tokenizer)
    n = rl_config.rollout.n
    rollout = provider(ray_cluster, rl_config, SlowRolloutWorker)
    try:
        expected = rollout.run(samples, n, seed=7)  # no failure: the reference
        assert keys(expected) == [(s.id, k) for s in samples for k in range(n)]
        assert rollout.replacements == 0

        result, errors = [], []

        def run():
            try:
                result.extend(rollout.run(samples, n, seed=7))
            except Exception as err:  # surfaced by the assertion below
                errors.append(err)

        thread = threading.Thread(target=run)
        thread.start()
        while not rollout.in_flight:  # wait until both workers hold their groups
            time.sleep(0.01)
        victim = rollout.workers[0]
        ray_cluster.kill(victim)
        thread.join(timeout=120)
        assert not errors, errors
        assert rollout.replacements == 1 and rollout.workers[0] is not victim
        assert keys(result) == keys(expected)  # each trajectory exactly once, in order
        for got, want in zip(result, expected, strict=True):  # seeded: the re-run is the same
            assert got.response_ids == want.response_ids
            assert got.loss_mask == want.loss_mask
    finally:
        rollout.shutdown()
