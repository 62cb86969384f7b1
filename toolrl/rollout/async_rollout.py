"""Asynchronous rollouts: the engine keeps generating while the trainer trains.

`AsyncRollout` is a `RolloutProvider`: the trainer's step is unchanged (it asks for the
trajectories of step s with `run`, trains, says `weights_updated`). Behind it a producer thread
runs one event loop that rolls out the batches of steps start, start+1, ... ahead of time, many
batches at once, on its own copy of the weights (`VersionedEngine`):

- **Staleness bound.** Step s's batch is started only once the engine holds weight version
  ≥ s − k (k = `trainer.max_staleness`; version v = the weights after v updates). Versions only
  grow, so every token of a trajectory trained at step s comes from a version in [s − k, s]:
  staleness s − (its oldest turn's version) ≤ k. With k = 0 the batch of step s starts only
  after update s − 1, which is the synchronous step.
- **Partial rollouts** (`trainer.partial_rollouts`, on by default): a new version reaches the
  engine at its next generation call, so a trajectory in flight continues with the new weights;
  each turn records the version that sampled it (`Turn.weight_version`). Off: the engine takes a
  new version only when no trajectory is in flight, so every trajectory has one version.
- **Off-policy loss.** The trainer recomputes π_old (the proximal policy) for every row; the
  behaviour policy's log-probs are the engine's (`Trajectory.rollout_logprobs`). The decoupled
  PPO objective (AReaL: the clip around π_prox, an importance weight π_prox / π_behav) is
  `algorithm.rollout_correction.rollout_is=token` with its cap `rollout_is_threshold`; add
  `rollout_rs=token` with `rollout_rs_threshold` = the cap and `rollout_rs_threshold_lower=0`
  to drop, as AReaL does, tokens whose weight exceeds the cap instead of truncating them
  (toolrl/algorithms/rollout_correction.py).

Guarantees: the trainer trains steps start, start+1, ... once each, on the batch of that step
(prompts and seeds as in the synchronous run), with staleness ≤ k. A killed run resumes from
its last checkpoint; the batches produced ahead of it are dropped (regenerated with the resumed
weights), and `async/dropped_batches` counts what `close` dropped. Not guaranteed for k > 0: the
same trajectories as an uninterrupted run, since which version a turn gets depends on timing.

Metrics (`metrics()`, per step): `async/trainer_wait_s` (the trainer waited for its batch),
`async/generation_idle_s` (the producer had no trajectory to work on: every admissible batch
done, the next held back by the staleness bound). Staleness and partial fractions are computed
by the trainer from the turns' versions (`staleness_metrics`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from toolrl.rollout.agent_loop import AgentLoop, BatchScheduler, LoopSettings
from toolrl.rollout.engines.base import Engine, GenerationRequest, GenerationResult
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
    """Validation's view of a shared `VersionedEngine`: it takes the newest weights first."""

    def __init__(self, versioned: VersionedEngine):
        self.versioned = versioned

    @property
    def max_context_length(self) -> int:
        return self.versioned.max_context_length

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.versioned.take_pending()
        return self.versioned.generate(requests)

    def close(self) -> None:
        pass


class AsyncRollout:
    """A `RolloutProvider` whose batches are produced ahead of the trainer (module docstring)."""

    def __init__(
        self,
        engine: VersionedEngine,
        validation_engine: Engine,
        tokenizer,
        tools: list[Any],
        settings: LoopSettings,
        *,
        batch_of: Callable[[int], list[Sample]],
        seed_of: Callable[[int], int],
        n: int,
        start: int,
        total: int,
        max_staleness: int,
        snapshot: Callable[[], dict],
    ):
        self.loop = AgentLoop(engine, tokenizer, tools, settings)
        self.versioned = engine
        self._validation_engine = validation_engine
        self.batch_of, self.seed_of, self.n = batch_of, seed_of, n
        self.start, self.total, self.k = start, total, max_staleness
        self._snapshot = snapshot
        self._step_of_seed = {seed_of(s): s for s in range(start, total)}
        self._ready: dict[int, list[Trajectory]] = {}
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._wait_s = 0.0
        self._idle_s = 0.0

    # --- the RolloutProvider seam ------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine validation generates with (the trained model's own weights)."""
        return self._validation_engine

    @property
    def tools(self) -> list[Any]:
        return list(self.loop.tools.values())

    @property
    def max_context_length(self) -> int:
        return self.loop.settings.max_context_length

    def run(self, samples: list[Sample], n: int, *, seed: int) -> list[Trajectory]:
        """The trajectories of the step whose seed is `seed`, produced ahead of time."""
        step = self._step_of_seed.get(seed)
        if step is None or n != self.n:
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
        if [t.sample.id for t in trajectories[:: self.n]] != [s.id for s in samples]:
            raise RuntimeError(f"the asynchronous batch of step {step} has other prompts")
        return trajectories

    def weights_updated(self, version: int) -> None:
        self.versioned.publish(version, self._snapshot())
        with self._cond:
            self._cond.notify_all()

    def samples_from(self, model: Any) -> bool:
        return False  # a copy of the weights, possibly older: π_old is recomputed

    def metrics(self) -> dict[str, float]:
        out = {"async/trainer_wait_s": self._wait_s, "async/generation_idle_s": self._idle_s}
        self._wait_s = self._idle_s = 0.0
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)

    # --- the producer --------------------------------------------------------------------------

    def _produce(self) -> None:
        try:
            asyncio.run(self._produce_all())
        except BaseException as err:  # the trainer's `run` re-raises it
            with self._cond:
                self._error = err
                self._cond.notify_all()

    async def _produce_all(self) -> None:
        scheduler = BatchScheduler(self.versioned, self.loop.settings.max_batch_size)
        # One bound on concurrent tool calls for every batch in flight, as in a synchronous step.
        slots = asyncio.Semaphore(self.loop.settings.max_concurrent_tools)
        batches = []
        try:
            for step in range(self.start, self.total):
                await self._admit(step)
                if self._closed:
                    break
                batches.append(asyncio.create_task(self._batch(step, scheduler, slots)))
            await asyncio.gather(*batches)
        finally:
            for task in batches:
                task.cancel()
            await scheduler.close()

    async def _admit(self, step: int) -> None:
        """Wait until the engine holds (or, with partial rollouts, will take at its next call)
        a version ≥ step − k."""
        idle_since = None
        while not self._closed:
            engine = self.versioned
            if not engine.partial and self._in_flight == 0:
                await asyncio.to_thread(engine.take_pending)
            held = engine.newest if engine.partial else engine.version
            if held >= step - self.k:
                break
            if self._in_flight == 0 and idle_since is None:
                idle_since = time.perf_counter()
            await asyncio.sleep(0.005)
        if idle_since is not None:
            self._idle_s += time.perf_counter() - idle_since

    async def _batch(self, step: int, scheduler: BatchScheduler, slots) -> None:
        samples = self.batch_of(step)
        self._in_flight += len(samples) * self.n
        try:
            trajectories = await self.loop.arun_on(
                scheduler, samples, self.n, self.seed_of(step), slots
            )
        finally:
            self._in_flight -= len(samples) * self.n
        with self._cond:
            self._ready[step] = trajectories
            self._cond.notify_all()


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
