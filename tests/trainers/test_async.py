"""`trainer.mode=async` on the tiny model: k = 0 is the synchronous trainer, the staleness bound
holds when the producer runs far ahead, partial rollouts record their versions, and a killed
run resumes without duplicated or missing steps."""

import asyncio
import json
import random
import time

import pytest

from toolrl.tools.base import ToolResult
from toolrl.trainers.rl_setup import build_rl_trainer, fit
from toolrl.trainers.tracking import read_metrics

from .conftest import EchoTool, parity_reward, tiny_rl_config
from .test_rl import as_overrides, kill_during_step, run_fit

UNTIMED = ("timing/", "async/", "rollout_corr/")


class SlowEcho(EchoTool):
    """The echo tool with a random latency (the producer's tool calls straddle updates)."""

    def __init__(self, seconds=(0.0, 0.05)):
        self.seconds, self.rng = seconds, random.Random(0)

    async def call(self, arguments):
        await asyncio.sleep(self.rng.uniform(*self.seconds))
        return ToolResult(arguments["code"][::-1], "success")


def stripped(rows):
    return [{k: v for k, v in r.items() if not k.startswith(UNTIMED)} for r in rows]


def test_k0_reproduces_the_synchronous_trainer(tiny_dir, rl_data, tmp_path):
    common = ["algorithm.old_log_probs=recompute", "trainer.save_every=0"]
    sync = tiny_rl_config(tiny_dir, rl_data, tmp_path / "a", *common)
    run_a = fit(sync, tools=[EchoTool()], reward_fn=parity_reward)
    k0 = tiny_rl_config(
        tiny_dir, rl_data, tmp_path / "b", *common, "trainer.mode=async", "trainer.max_staleness=0"
    )
    run_b = fit(k0, tools=[EchoTool()], reward_fn=parity_reward)
    a, b = read_metrics(run_a), read_metrics(run_b)
    assert [r["step"] for r in b] == [1, 2, 3]
    assert stripped(a) == stripped(b)
    assert all(r["async/staleness/max"] == 0 for r in b)


def versions_by_step(run_dir, steps):
    out = {}
    for step in range(1, steps + 1):
        path = run_dir / "rollouts" / f"step_{step}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        out[step - 1] = [[turn["weight_version"] for turn in r["turns"]] for r in records]
    return out


@pytest.mark.parametrize("partial", [True, False])
def test_staleness_never_exceeds_k_when_the_producer_runs_ahead(
    tiny_dir, rl_data, tmp_path, monkeypatch, partial
):
    """A slow trainer (each update sleeps) and a fast producer: without the bound the producer
    would run every batch on the first weights. Every token trained at step s comes from a
    version in [s − k, s]; versions never decrease within a trajectory; without partial
    rollouts a trajectory has one version."""
    k, steps = 1, 5
    config = tiny_rl_config(
        tiny_dir, rl_data, tmp_path / "runs",
        "trainer.mode=async", f"trainer.max_staleness={k}", f"trainer.total_steps={steps}",
        f"trainer.partial_rollouts={str(partial).lower()}", "trainer.save_every=0",
        "rollout.max_turns=3",
    )  # fmt: skip
    trainer, _ = build_rl_trainer(config, tools=[SlowEcho()], reward_fn=parity_reward)
    update = trainer.update_policy

    def slow_update(batch):
        time.sleep(0.3)
        return update(batch)

    trainer.update_policy = slow_update
    seen = {}
    try:
        for step in range(steps):
            metrics = trainer.step(step)
            assert metrics["async/staleness/max"] <= k
            seen[step] = [[t.weight_version for t in tr.turns] for tr in trainer.last_trajectories]
    finally:
        trainer.rollout.close()
    lagging = 0
    for step, trajectories in seen.items():
        for versions in trajectories:
            assert versions == sorted(versions)
            assert step - k <= min(versions) and max(versions) <= step
            if not partial:
                assert len(set(versions)) == 1
            lagging += min(versions) < step
    assert lagging > 0, "the producer never ran ahead: the test did not test the bound"


def two_a_step(samples, total, start=0):
    """A plan of `total` steps of two prompts × 2 rollouts, seeded by the step, k = 1."""
    from toolrl.rollout.async_rollout import StepPlan

    return StepPlan(
        batch_of=lambda step: samples[2 * step : 2 * step + 2],
        seed_of=lambda step: step,
        n=2,
        start=start,
        total=total,
        max_staleness=1,
    )


CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(1)"}}\n</tool_call>'


def three_calls(context: str) -> str:
    """A scripted policy: three tool calls, then an answer."""
    return "Again. " + CALL if context.count("<tool_response>") < 3 else "Done. \\boxed{1}"


def test_a_partial_rollout_continues_with_the_new_weights_and_says_so(tiny_tokenizer, rl_data):
    """Tool calls that take longer than an update: trajectories in flight at an update take the
    new version at their next turn, and their turns record both versions; the producer's
    engine is loaded with each published version, in order."""
    from toolrl.data.rl import load_rl_samples
    from toolrl.rollout.agent_loop import LoopSettings
    from toolrl.rollout.async_rollout import AsyncRollout, EngineProducer, VersionedEngine
    from toolrl.rollout.engines.scripted import ScriptedEngine

    samples = load_rl_samples(rl_data)
    loaded = []
    engine = ScriptedEngine(tiny_tokenizer, three_calls)
    versioned = VersionedEngine(engine, lambda state: loaded.append(state["v"]), 0, partial=True)
    tools = [SlowEcho((0.1, 0.3))]
    settings = LoopSettings(max_turns=6, max_response_length=4096)
    producer = EngineProducer(versioned, tiny_tokenizer, tools, settings)
    rollout = AsyncRollout(
        producer, engine, tools, 0, two_a_step(samples, 3), lambda: {"v": len(loaded) + 1}
    )
    partial = 0
    try:
        for step in range(3):
            trajectories = rollout.run(samples[2 * step : 2 * step + 2], 2, seed=step)
            for t in trajectories:
                versions = [turn.weight_version for turn in t.turns]
                assert len(versions) == 4 and versions == sorted(versions)
                assert step - 1 <= versions[0] and versions[-1] <= step
                partial += len(set(versions)) > 1
            time.sleep(0.4)  # training
            rollout.weights_updated(step + 1)
    finally:
        rollout.close()
    assert partial > 0
    assert loaded == sorted(loaded) and loaded[0] == 1


def test_a_resume_counts_the_batches_the_killed_run_had_started(tmp_path, capsys):
    """The journal says batches up to step 4 (0-based) were started: resuming at step 2 drops
    steps 2, 3, 4 (3 batches, reported once); at step 5 nothing; without a journal nothing."""
    from toolrl.rollout.async_rollout import AsyncRollout, dropped_on_resume, note_started

    journal = tmp_path / "run" / "async_batches.json"
    assert dropped_on_resume(journal, 2) == 0
    for step in range(5):
        note_started(journal, step)
    assert dropped_on_resume(journal, 5) == 0
    assert dropped_on_resume(journal, 2) == 3
    assert "dropped the 3 batches" in capsys.readouterr().err

    class Idle:  # a producer that is never asked to produce
        def metrics(self):
            return {}

    rollout = AsyncRollout(Idle(), None, [], 0, two_a_step([], 6, start=2), dict, journal)
    assert rollout.metrics()["async/dropped_batches"] == 3
    assert rollout.metrics()["async/dropped_batches"] == 0


@pytest.mark.parametrize("partial", [True, False])
def test_validation_takes_a_new_version_only_where_training_rollouts_may(tiny_tokenizer, partial):
    """Without partial rollouts a published version waits until no trajectory is in flight:
    validation generating meanwhile must not load it under them."""
    from toolrl.rollout.async_rollout import NewestWeights, VersionedEngine
    from toolrl.rollout.engines.base import GenerationRequest
    from toolrl.rollout.engines.scripted import ScriptedEngine

    loaded = []
    engine = ScriptedEngine(tiny_tokenizer, lambda context: "ok")
    versioned = VersionedEngine(engine, lambda state: loaded.append(state), 0, partial=partial)
    versioned.publish(1, {"v": 1})
    (result,) = NewestWeights(versioned).generate([GenerationRequest([1, 2], 4)])
    assert result.weight_version == (1 if partial else 0)
    assert loaded == ([{"v": 1}] if partial else [])


@pytest.mark.slow
def test_a_killed_async_run_resumes_without_duplicated_or_missing_steps(rl_config, tmp_path):
    overrides = [
        *as_overrides(rl_config), f"trainer.output_dir={tmp_path / 'b'}", "trainer.mode=async",
        "trainer.max_staleness=1",
    ]  # fmt: skip
    kill_during_step(overrides, tmp_path, 2)
    assert run_fit(overrides, tmp_path, resume=True).wait(timeout=300) == 0
    rows = read_metrics(tmp_path / "b" / "test")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["async/staleness/max"] <= 1 for r in rows)
    # killed inside step 3 (checkpoint 2): the batch of step 3 had been started, and dropped
    assert [r["async/dropped_batches"] for r in rows] == [0, 0, 1]
