"""`trainer.mode=async` under `cluster.backend=ray`: the staleness bound with a slow trainer,
partial rollouts' versions, a dead worker's share regenerated, k = 0 equal to the synchronous
Ray run, and a killed run resumed."""

import asyncio
import dataclasses
import os
import random
import signal
import sys
import threading
import time

import pytest
from ray.exceptions import RayActorError

from toolrl.data.rl import load_rl_samples
from toolrl.distributed.async_rollout import AsyncRolloutWorker, RayProducer
from toolrl.distributed.launch import fit_on_backend
from toolrl.rollout.agent_loop import AgentLoop
from toolrl.rollout.async_rollout import AsyncRollout, StepPlan, VersionedEngine
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.tools.base import ToolResult
from toolrl.trainers.tracking import read_metrics

from .conftest import EchoTool, parity_reward

UNTIMED = ("timing/", "async/", "rollout_corr/")
CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(1)"}}\n</tool_call>'


def three_calls(context: str) -> str:
    """A scripted policy: three tool calls, then an answer."""
    return "Again. " + CALL if context.count("<tool_response>") < 3 else "Done. \\boxed{1}"


class SlowEcho(EchoTool):
    """The echo tool answering after a random delay (tool calls straddle updates)."""

    def __init__(self, seconds):
        self.seconds, self.rng = seconds, random.Random(0)

    async def call(self, arguments):
        await asyncio.sleep(self.rng.uniform(*self.seconds))
        return ToolResult(arguments["code"][::-1], "success")


class ScriptedWorker(AsyncRolloutWorker):
    """An async rollout worker whose engine follows `three_calls`; a published state
    {"v": version} is recorded instead of loaded."""

    def __init__(self, config, tools_factory, *, partial):
        super().__init__(config, tools_factory, partial=partial)
        self.loaded = []
        engine = ScriptedEngine(self.loop.tokenizer, three_calls)
        record = lambda state: self.loaded.append(state["v"])  # noqa: E731
        self.versioned = VersionedEngine(engine, record, -1, partial=partial)
        self.loop = AgentLoop(
            self.versioned, self.loop.tokenizer, self.loop.tools, self.loop.settings
        )

    async def loaded_versions(self):
        return self.loaded


def scripted_rollout(ray, config, rl_data, *, partial, total, seconds, k=1):
    """An `AsyncRollout` over 2 scripted Ray workers: 2 prompts × 2 rollouts a step (one group
    per worker), and `publish(v)` to give the trainer's weights of version v."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    samples = load_rl_samples(rl_data)
    long = dataclasses.replace(config.rollout, max_turns=6, max_response_length=4096)
    config = dataclasses.replace(config, rollout=long)

    def start():
        actor = ray.remote(ScriptedWorker).options(num_cpus=0.01)
        return actor.remote(config.to_dict(), lambda: [SlowEcho(seconds)], partial=partial)

    version = [0]
    producer = RayProducer(start, 2, {"v": 0}, 0)
    plan = StepPlan(
        batch_of=lambda step: samples[2 * step : 2 * step + 2],
        seed_of=lambda step: step,
        n=2,
        start=0,
        total=total,
        max_staleness=k,
    )
    rollout = AsyncRollout(producer, producer.engine, [], 0, plan, lambda: {"v": version[0]})

    def publish(v):
        version[0] = v
        rollout.weights_updated(v)

    return rollout, plan, publish


@pytest.mark.slow
@pytest.mark.parametrize("partial", [True, False])
def test_staleness_stays_within_k_while_the_workers_run_ahead_of_a_slow_trainer(
    rl_config, rl_data, ray_cluster, partial
):
    """Each "update" takes 0.4 s, a trajectory ~0.6 s of tool calls: the workers start the next
    batch before the trainer is done. Every turn trained at step s comes from a version in
    [s − 1, s], versions never decrease within a trajectory, partial rollouts carry both
    versions (and without them a trajectory has one), and the workers took the published
    versions in order."""
    k, total = 1, 3  # the 6 training rows
    rollout, plan, publish = scripted_rollout(
        ray_cluster, rl_config, rl_data, partial=partial, total=total, seconds=(0.1, 0.3)
    )
    lagging = mixed = 0
    try:
        for step in range(total):
            trajectories = rollout.run(plan.batch_of(step), 2, seed=step)
            assert len(trajectories) == 4
            for t in trajectories:
                versions = [turn.weight_version for turn in t.turns]
                assert len(versions) == 4 and versions == sorted(versions)
                assert step - k <= versions[0] and versions[-1] <= step
                lagging += versions[0] < step
                mixed += len(set(versions)) > 1
            time.sleep(0.4)  # training
            publish(step + 1)
        loaded = ray_cluster.get([w.loaded_versions.remote() for w in rollout.producer.workers])
    finally:
        rollout.close()
    assert lagging > 0, "the workers never ran ahead: the test did not test the bound"
    assert mixed > 0 if partial else mixed == 0
    for versions in loaded:
        assert versions == sorted(versions) and versions[0] == 0


@pytest.mark.slow
def test_a_dead_worker_is_replaced_and_its_shares_in_flight_regenerated(
    rl_config, rl_data, ray_cluster
):
    """Batches 0 and 1 start at once (k = 1), one group of each on each worker; worker 0 is
    killed while both are in flight: one replacement, its two groups re-run, and each batch
    comes back whole, in order."""
    rollout, plan, publish = scripted_rollout(
        ray_cluster, rl_config, rl_data, partial=True, total=2, seconds=(0.5, 0.6)
    )
    victim = rollout.producer.workers[0]
    got = {}
    try:
        thread = threading.Thread(
            target=lambda: got.update({0: rollout.run(plan.batch_of(0), 2, seed=0)})
        )
        thread.start()
        time.sleep(0.5)  # both batches in flight: each share takes >= 1.5 s of tool calls
        ray_cluster.kill(victim)
        thread.join(timeout=120)
        publish(1)
        got[1] = rollout.run(plan.batch_of(1), 2, seed=1)
        metrics = rollout.metrics()
    finally:
        rollout.close()
    assert metrics["async/worker_replacements"] == 1
    assert metrics["async/regenerated_groups"] == 2
    assert rollout.producer.replacements == 1
    for step, trajectories in got.items():
        keys = [(t.sample.id, t.group_index) for t in trajectories]
        assert keys == [(s.id, g) for s in plan.batch_of(step) for g in range(2)]
        assert all(len(t.turns) == 4 for t in trajectories)


def on_ray(config, *overrides):
    """`config` with one gloo training rank and 2 rollout workers under Ray, plus `overrides`
    of the trainer section."""
    trainer = dataclasses.replace(config.trainer, **dict(overrides))
    cluster = dataclasses.replace(
        config.cluster, backend="ray", ranks_per_node=1, rollout_workers=2
    )
    return dataclasses.replace(config, cluster=cluster, trainer=trainer)


def stripped(rows):
    return [{k: v for k, v in r.items() if not k.startswith(UNTIMED)} for r in rows]


@pytest.mark.slow
def test_k0_under_ray_reproduces_the_synchronous_ray_run(rl_config, ray_cluster, tmp_path):
    base = dataclasses.replace(
        rl_config, algorithm=dataclasses.replace(rl_config.algorithm, old_log_probs="recompute")
    )
    common = {"total_steps": 3, "save_every": 0}
    sync = on_ray(base, *common.items(), ("output_dir", str(tmp_path / "a")))
    k0 = on_ray(
        base, *common.items(), ("output_dir", str(tmp_path / "b")),
        ("mode", "async"), ("max_staleness", 0),
    )  # fmt: skip
    a = read_metrics(fit_on_backend(sync, tools=[EchoTool()], reward_fn=parity_reward))
    b = read_metrics(fit_on_backend(k0, tools=[EchoTool()], reward_fn=parity_reward))
    assert [r["step"] for r in b] == [1, 2, 3]
    assert stripped(a) == stripped(b)
    assert all(r["async/staleness/max"] == 0 for r in b)


class KillAt:
    """The parity reward, but the training process kills itself (SIGKILL) when it scores the
    batch of step `step` (0-based): a kill in the middle of that step."""

    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, trajectories):
        if self.calls == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        parity_reward(trajectories)


@pytest.mark.slow
def test_a_killed_async_ray_run_resumes_with_each_step_once(rl_config, ray_cluster, tmp_path):
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config = on_ray(
        rl_config, ("total_steps", 3), ("save_every", 1), ("output_dir", str(tmp_path)),
        ("mode", "async"), ("max_staleness", 1),
    )  # fmt: skip
    with pytest.raises(RayActorError):
        fit_on_backend(config, tools=[EchoTool()], reward_fn=KillAt(2))
    run_dir = fit_on_backend(config, resume=True, tools=[EchoTool()], reward_fn=parity_reward)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["async/staleness/max"] <= 1 for r in rows)
    # killed inside step 3 (checkpoint 2): the batch of step 3 had been started, and dropped
    assert [r["async/dropped_batches"] for r in rows] == [0, 0, 1]
    assert len((run_dir / "rollouts" / "step_3.jsonl").read_text().splitlines()) == 8
