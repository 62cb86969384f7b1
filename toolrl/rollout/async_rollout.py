"""Asynchronous rollouts: the engines keep generating while the trainer trains.

`AsyncRollout` is a `RolloutProvider`: the trainer's step is unchanged (it asks for the
trajectories of step s with `run`, trains, says `weights_updated`). Behind it a producer thread
runs one event loop that rolls out the batches of steps start, start+1, ... ahead of time, many
batches at once, through a `BatchProducer` holding its own copies of the weights: an agent loop
over a `VersionedEngine` in this process (`EngineProducer`), or Ray rollout workers, each with
its own `VersionedEngine` (`toolrl.distributed.async_rollout.RayProducer`). Every update is
published to the producer.

- **Staleness bound.** Step s's batch is started only once the engines hold weight version
  ≥ s − k (k = `trainer.max_staleness`; version v = the weights after v updates). Versions only
  grow, so every token of a trajectory trained at step s comes from a version in [s − k, s]:
  staleness s − (its oldest turn's version) ≤ k. With k = 0 the batch of step s starts only
  after update s − 1, which is the synchronous step.
- **Partial rollouts** (`trainer.partial_rollouts`, on by default): a new version reaches an
  engine at its next generation call, so a trajectory in flight continues with the new weights;
  each turn records the version that sampled it (`Turn.weight_version`). Off: an engine takes a
  new version only when no trajectory is in flight on it, so every trajectory has one version.
- **Off-policy loss.** The trainer recomputes π_old (the proximal policy) for every row; the
  behaviour policy's log-probs are the engine's (`Trajectory.rollout_logprobs`). The decoupled
  PPO objective (AReaL: the clip around π_prox, an importance weight π_prox / π_behav) is
  `algorithm.rollout_correction.rollout_is=token` with its cap `rollout_is_threshold`; add
  `rollout_rs=token` with `rollout_rs_threshold` = the cap and `rollout_rs_threshold_lower=0`
  to drop, as AReaL does, tokens whose weight exceeds the cap instead of truncating them
  (toolrl/algorithms/rollout_correction.py).

Guarantees: the trainer trains steps start, start+1, ... once each, on the batch of that step
(prompts and seeds as in the synchronous run), with staleness ≤ k. A killed run resumes from
its last checkpoint; the batches the killed run had started for the steps from there on (in
flight, ready, or trained after the checkpoint) are dropped and regenerated with the resumed
weights. The producer notes each batch it starts in a journal file in the run directory, so the
resumed run counts them: `async/dropped_batches` on its first step (0 on the others), and a
line on stderr. Not guaranteed for k > 0: the same trajectories as an uninterrupted run, since
which version a turn gets depends on timing.

Metrics (`metrics()`, per step): `async/trainer_wait_s` (the trainer waited for its batch),
`async/generation_idle_s` (the producer had no trajectory to work on: every admissible batch
done, the next held back by the staleness bound), `async/dropped_batches`, and the producer's
own (Ray: `async/worker_replacements`, `async/regenerated_groups`). Staleness and partial
fractions are computed by the trainer from the turns' versions (`staleness_metrics`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.base import Engine, GenerationRequest, GenerationResult
from toolrl.rollout.scheduler import BatchScheduler
from toolrl.types import Sample, Trajectory


class VersionedEngine(Engine):
    """An engine over its own copy of the policy that takes new weight versions when allowed,
    and tags every result with the version that generated it.

    `load(state)` puts a published state dict into the engine (HF: `load_state_dict` into the
    copy; vLLM: `load_weights`). Generation and loading hold one lock, so a version never
    changes inside a generation call.
    """

    def __init__(self, inner: Engine, load: Callable[[dict], None], version: int, *, partial: bool):
        self.inner = inner
        self._load = load
        self.version = version
        self.partial = partial
        self._pending: tuple[int, dict] | None = None
        self._lock = threading.Lock()

    @property
    def max_context_length(self) -> int:
        return self.inner.max_context_length

    def publish(self, version: int, state: dict) -> None:
        """A new version from the trainer; taken at the next allowed moment (a newer one
        replaces an untaken older one)."""
        with self._lock:
            self._pending = (version, state)

    @property
    def newest(self) -> int:
        """The newest version published or held."""
        pending = self._pending
        return max(self.version, pending[0]) if pending else self.version

    def take_pending(self) -> bool:
        """Load the published version now, if there is one; whether it did."""
        with self._lock:
            return self._take_locked()

    def _take_locked(self) -> bool:
        if self._pending is None:
            return False
        version, state = self._pending
        self._pending = None
        self._load(state)
        self.version = version
        return True

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        with self._lock:
            if self.partial:
                self._take_locked()
            results = self.inner.generate(requests)
            for result in results:
                result.weight_version = self.version
            return results

    def close(self) -> None:
        self.inner.close()


class NewestWeights(Engine):
    """Validation's view of a shared `VersionedEngine` (closing it leaves the engine open).
    With partial rollouts it generates with the newest weights (taken at the call, as every
    call does); without, with the version the engine holds: taking a newer one would change
    the weights under the trajectories in flight, which then would have two versions."""

    def __init__(self, versioned: VersionedEngine):
        self.versioned = versioned

    @property
    def max_context_length(self) -> int:
        return self.versioned.max_context_length

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return self.versioned.generate(requests)

    def close(self) -> None:
        pass


class BatchProducer(Protocol):
    """Where an `AsyncRollout` generates its batches: an engine in this process
    (`EngineProducer`) or Ray rollout workers (`toolrl.distributed.async_rollout.RayProducer`).
    Its coroutines run on the producer thread's event loop; `publish` comes from the trainer's."""

    async def admissible_version(self, *, idle: bool) -> int:
        """The oldest weight version a batch started now would sample with: with partial
        rollouts the newest published (taken at the next generation call); without, the one
        held (`idle`: no batch of this producer is in flight, so a published version may be
        taken now)."""
        ...

    async def produce(self, samples: list[Sample], n: int, seed: int) -> list[Trajectory]:
        """n trajectories per sample in (sample, rollout) order, each turn tagged with its
        version; concurrent calls share the engines."""
        ...

    def publish(self, version: int, state: dict) -> None:
        """A new version from the trainer (a state dict), taken when the mode allows."""
        ...

    def running(self) -> AbstractAsyncContextManager:
        """The producer's event loop is running inside this context."""
        ...

    def metrics(self) -> dict[str, float]:
        """What the producer counted since the last call (e.g. replaced workers)."""
        ...

    def close(self) -> None:
        """Release the producer's engines or workers (the event loop has ended)."""
        ...


class EngineProducer:
    """A `BatchProducer` in this process: one agent loop over a `VersionedEngine`, one
    scheduler and one bound on concurrent tool calls for every batch in flight (as in a
    synchronous step)."""

    def __init__(
        self, engine: VersionedEngine, tokenizer, tools: list[Any], settings: LoopSettings
    ):
        self.loop = AgentLoop(engine, tokenizer, tools, settings)
        self.versioned = engine
        self._scheduler: BatchScheduler | None = None
        self._slots: asyncio.Semaphore | None = None

    async def admissible_version(self, *, idle: bool) -> int:
        engine = self.versioned
        if not engine.partial and idle:
            await asyncio.to_thread(engine.take_pending)
        return engine.newest if engine.partial else engine.version

    async def produce(self, samples: list[Sample], n: int, seed: int) -> list[Trajectory]:
        assert self._scheduler is not None, "produce runs inside `running()`"
        return await self.loop.arun_on(self._scheduler, samples, n, seed, self._slots)

    def publish(self, version: int, state: dict) -> None:
        self.versioned.publish(version, state)

    @asynccontextmanager
    async def running(self):
        settings = self.loop.settings
        self._scheduler = BatchScheduler(self.versioned, settings.max_batch_size)
        self._slots = asyncio.Semaphore(settings.max_concurrent_tools)
        try:
            yield
        finally:
            await self._scheduler.close()

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class StepPlan:
    """The steps an asynchronous rollout produces: from `start` (0, or the checkpoint's step
    when resuming) up to `total`, step s's prompts `batch_of(s)` × `n` seeded by `seed_of(s)`,
    at most `max_staleness` versions behind the trainer."""

    batch_of: Callable[[int], list[Sample]]
    seed_of: Callable[[int], int]
    n: int
    start: int
    total: int
    max_staleness: int


class AsyncRollout:
    """A `RolloutProvider` whose batches are produced ahead of the trainer (module docstring).

    `snapshot()` gives the trainer's weights as a state dict for `publish`; `journal` is a file
    where the producer notes the last step whose batch it started, so that a resumed run can
    count the batches the killed one had produced ahead (`async/dropped_batches`).
    """

    def __init__(
        self,
        producer: BatchProducer,
        validation_engine: Engine,
        tools: list[Any],
        max_context_length: int,
        plan: StepPlan,
        snapshot: Callable[[], dict],
        journal: Path | None = None,
    ):
        self.producer = producer
        self._validation_engine = validation_engine
        self._tools = tools
        self._max_context_length = max_context_length
        self.plan = plan
        self._snapshot = snapshot
        self.journal = journal
        self._step_of_seed = {plan.seed_of(s): s for s in range(plan.start, plan.total)}
        self._ready: dict[int, list[Trajectory]] = {}
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._wait_s = 0.0
        self._idle_s = 0.0
        self._dropped = dropped_on_resume(journal, plan.start)

    # --- the RolloutProvider seam ------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine validation generates with (the trained model's own weights)."""
        return self._validation_engine

    @property
    def tools(self) -> list[Any]:
        return self._tools

    @property
    def max_context_length(self) -> int:
        return self._max_context_length

    def run(self, samples: list[Sample], n: int, *, seed: int) -> list[Trajectory]:
        """The trajectories of the step whose seed is `seed`, produced ahead of time."""
        step = self._step_of_seed.get(seed)
        if step is None or n != self.plan.n:
            raise ValueError(f"no asynchronous batch was planned for seed {seed} and n={n}")
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="toolrl-async", daemon=True)
            self._thread.start()
        began = time.perf_counter()
        with self._cond:
            while step not in self._ready and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise RuntimeError("the asynchronous rollout failed") from self._error
            trajectories = self._ready.pop(step)
        self._wait_s += time.perf_counter() - began
        if [t.sample.id for t in trajectories[:: self.plan.n]] != [s.id for s in samples]:
            raise RuntimeError(f"the asynchronous batch of step {step} has other prompts")
        return trajectories

    def weights_updated(self, version: int) -> None:
        self.producer.publish(version, self._snapshot())
        with self._cond:
            self._cond.notify_all()

    def samples_from(self, model: Any) -> bool:
        return False  # a copy of the weights, possibly older: π_old is recomputed

    def metrics(self) -> dict[str, float]:
        out = {
            "async/trainer_wait_s": self._wait_s,
            "async/generation_idle_s": self._idle_s,
            "async/dropped_batches": float(self._dropped),
            **self.producer.metrics(),
        }
        self._wait_s = self._idle_s = 0.0
        self._dropped = 0
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.producer.close()

    # --- the producer --------------------------------------------------------------------------

    def _produce(self) -> None:
        try:
            asyncio.run(self._produce_all())
        except BaseException as err:  # the trainer's `run` re-raises it
            with self._cond:
                self._error = err
                self._cond.notify_all()

    async def _produce_all(self) -> None:
        batches = []
        async with self.producer.running():
            try:
                for step in range(self.plan.start, self.plan.total):
                    await self._admit(step)
                    if self._closed:
                        break
                    note_started(self.journal, step)
                    batches.append(asyncio.create_task(self._batch(step)))
                await asyncio.gather(*batches)
            finally:
                for task in batches:
                    task.cancel()

    async def _admit(self, step: int) -> None:
        """Wait until a batch started now samples with a version ≥ step − k."""
        idle_since = None
        while not self._closed:
            idle = self._in_flight == 0
            if await self.producer.admissible_version(idle=idle) >= step - self.plan.max_staleness:
                break
            if idle and idle_since is None:
                idle_since = time.perf_counter()
            await asyncio.sleep(0.005)
        if idle_since is not None:
            self._idle_s += time.perf_counter() - idle_since

    async def _batch(self, step: int) -> None:
        samples, n = self.plan.batch_of(step), self.plan.n
        self._in_flight += len(samples) * n
        try:
            trajectories = await self.producer.produce(samples, n, self.plan.seed_of(step))
        finally:
            self._in_flight -= len(samples) * n
        with self._cond:
            self._ready[step] = trajectories
            self._cond.notify_all()


def note_started(journal: Path | None, step: int) -> None:
    """Record in `journal` that the batch of `step` was started (atomically replaced)."""
    if journal is None:
        return
    journal.parent.mkdir(parents=True, exist_ok=True)
    partial = journal.with_name(journal.name + ".partial")
    partial.write_text(json.dumps({"last_started_step": step}))
    os.replace(partial, journal)


def dropped_on_resume(journal: Path | None, start: int) -> int:
    """How many batches a killed run had started for steps ≥ `start`, the step it resumes
    from: they are regenerated with the resumed weights, so their work is dropped (a line on
    stderr says so)."""
    if journal is None or not journal.is_file():
        return 0
    last = json.loads(journal.read_text())["last_started_step"]
    dropped = max(0, last + 1 - start)
    if dropped:
        print(
            f"note: resuming at step {start + 1}: dropped the {dropped} batches that the "
            f"previous run had started for steps {start + 1}..{last + 1}; they are regenerated",
            file=sys.stderr,
        )
    return dropped


def staleness_metrics(trajectories: list[Trajectory], step: int) -> dict[str, float]:
    """How many versions behind step `step`'s weights each trajectory's oldest turn is (a
    histogram `async/staleness/<v>` of fractions, mean and max), and the fraction of partial
    trajectories (turns from more than one version)."""
    versions = [[turn.weight_version for turn in t.turns] for t in trajectories]
    staleness = [step - min(v) for v in versions if v]
    n = max(len(staleness), 1)
    metrics = {
        "async/staleness/mean": sum(staleness) / n,
        "async/staleness/max": float(max(staleness, default=0)),
        "async/partial_frac": sum(len(set(v)) > 1 for v in versions) / max(len(versions), 1),
    }
    for value in sorted(set(staleness)):
        metrics[f"async/staleness/{value}"] = staleness.count(value) / n
    return metrics
