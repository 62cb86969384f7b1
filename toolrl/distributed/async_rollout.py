"""`trainer.mode=async` under `cluster.backend=ray`: Ray rollout workers produce ahead.

The single-process design (toolrl/rollout/async_rollout.py) unchanged, with Ray workers as its
`BatchProducer`: training rank 0 runs the `AsyncRollout` (the producer thread, the staleness
bound, the ready batches), and `RayProducer` spreads each batch over the workers as the
synchronous `RayRollout` does (contiguous runs of whole groups, one per worker).

- Each `AsyncRolloutWorker` (an async Ray actor) holds its engine in a `VersionedEngine` and
  runs the batches it is given concurrently, through one scheduler, on one event loop.
- After every update rank 0 publishes the new weights to every worker (one `ray.put`, as
  `RayRollout.push_weights`). With partial rollouts a worker takes them at its next generation
  call; without, only when it has nothing in flight. A worker reports the version it holds with
  every result and every publish, so the producer knows, without polling, whether a batch of
  step s may start (every worker at version ≥ s − k).
- A worker that dies is replaced by a fresh actor holding the newest weights, and its share of
  every batch in flight is regenerated there (`async/worker_replacements`,
  `async/regenerated_groups`); a share comes back whole or not at all, so each trajectory is in
  its batch exactly once. The fresh worker's version is the newest, so the bound still holds.
- Every training rank's provider is `BroadcastAheadRollout`: rank 0 takes the step's batch from
  its `AsyncRollout` and broadcasts it; after an update every rank reads its model's full
  weights (a collective under FSDP2) and rank 0 publishes them.

Departure from the colocated synchronous set-up: a vLLM worker never sleeps here (it generates
while the trainer trains), so its GPU share must leave room for the colocated training rank.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from toolrl.distributed.data_parallel import full_state_dict
from toolrl.distributed.rollout import RayEngine, RolloutWorker, split_groups
from toolrl.rollout.agent_loop import AgentLoop
from toolrl.rollout.async_rollout import AsyncRollout, NewestWeights, StepPlan, VersionedEngine
from toolrl.rollout.scheduler import BatchScheduler
from toolrl.types import Sample, Trajectory


class AsyncRolloutWorker:
    """A `RolloutWorker`'s engine and tools in a `VersionedEngine`, rolling out many shares of
    batches at once (the body of an async Ray actor). It starts with no weights of the
    trainer's (version −1) until the first `publish`."""

    def __init__(self, config: dict[str, Any], tools_factory, *, partial: bool):
        worker = RolloutWorker(config, tools_factory)
        self.versioned = VersionedEngine(worker.engine, worker.load_state, -1, partial=partial)
        loop = worker.loop
        self.loop = AgentLoop(self.versioned, loop.tokenizer, loop.tools, loop.settings)
        self.in_flight = 0
        self._scheduler: BatchScheduler | None = None
        self._slots: asyncio.Semaphore | None = None

    def held(self) -> int:
        """The oldest version a share started now would sample with."""
        engine = self.versioned
        return engine.newest if engine.partial else engine.version

    async def publish(self, state: dict, version: int) -> int:
        """A new version (taken now if nothing is in flight); returns `held()`."""
        await asyncio.to_thread(self.versioned.publish, version, state)
        self._take_if_idle()
        return self.held()

    def _take_if_idle(self) -> None:
        """With nothing in flight, load a published version now. On the event loop's thread,
        not a worker thread: a share starting while it loads would get two versions."""
        if self.in_flight == 0:
            self.versioned.take_pending()

    async def rollout(self, groups: list[Sample], n: int, seed: int):
        """n trajectories for every sample of `groups`, and `held()` once they are done."""
        if self._scheduler is None:  # made on the actor's event loop
            settings = self.loop.settings
            self._scheduler = BatchScheduler(self.versioned, settings.max_batch_size)
            self._slots = asyncio.Semaphore(settings.max_concurrent_tools)
        self.in_flight += 1
        try:
            trajectories = await self.loop.arun_on(self._scheduler, groups, n, seed, self._slots)
        finally:
            self.in_flight -= 1
        self._take_if_idle()  # without partial rollouts, the moment to take a new version
        return trajectories, self.held()

    async def generate(self, requests: list) -> list:
        """Plain generation with the newest weights (validation, through `RayEngine`)."""
        return await asyncio.to_thread(NewestWeights(self.versioned).generate, requests)

    async def ping(self) -> int:
        return self.held()


class RayProducer:
    """A `BatchProducer` over `num_workers` `AsyncRolloutWorker` actors made by
    `make_worker()`, holding weights `state` of version `version` from the start.

    `max_replacements` bounds how often one share of a batch is re-run on a fresh worker
    before the rollout fails with an error naming the cause.
    """

    def __init__(
        self,
        make_worker: Callable[[], Any],
        num_workers: int,
        state: dict,
        version: int,
        *,
        max_replacements: int = 4,
    ):
        if num_workers < 1:
            raise ValueError(
                f"a Ray rollout needs at least one worker, got num_workers={num_workers}"
            )
        self.make_worker = make_worker
        self.max_replacements = max_replacements
        self.workers = [make_worker() for _ in range(num_workers)]
        self.held = [-1] * num_workers
        self._weights: tuple[Any, int] | None = None
        self._lock = threading.Lock()  # publish (trainer thread) against replacements
        self.replacements = 0
        self._counts = {"async/worker_replacements": 0.0, "async/regenerated_groups": 0.0}
        self.publish(version, state)

    async def admissible_version(self, *, idle: bool) -> int:
        return min(self.held)  # each worker takes what it may by itself

    def publish(self, version: int, state: dict) -> None:
        """Send `state` to every worker; a dead one is replaced (with these weights)."""
        import ray
        from ray.exceptions import RayActorError

        with self._lock:
            self._weights = (ray.put(state), version)
            ref = self._weights[0]
            calls = [(i, w, w.publish.remote(ref, version)) for i, w in enumerate(self.workers)]
            for i, worker, call in calls:
                try:
                    self._hold(i, ray.get(call))
                except RayActorError:
                    self._replace_locked(i, worker)

    async def produce(self, samples: list[Sample], n: int, seed: int) -> list[Trajectory]:
        runs = [r for r in split_groups(samples, len(self.workers)) if r]
        shares = await asyncio.gather(
            *(self._share(i, [samples[j] for j in run], n, seed) for i, run in enumerate(runs))
        )
        return [t for share in shares for t in share]

    async def _share(self, i: int, groups: list[Sample], n: int, seed: int) -> list[Trajectory]:
        """Worker i's share of a batch; re-run on a fresh worker if it dies meanwhile."""
        from ray.exceptions import RayActorError

        replaced = 0
        while True:
            worker = self.workers[i]
            try:
                trajectories, held = await worker.rollout.remote(groups, n, seed)
            except RayActorError as err:
                replaced += 1
                if replaced > self.max_replacements:
                    raise RuntimeError(
                        f"rollout worker {i} died and {self.max_replacements} replacements did "
                        f"not finish its share of the batch; last error: {err}"
                    ) from err
                await asyncio.to_thread(self._replace, i, worker)
                self._counts["async/regenerated_groups"] += len(groups)
                continue
            self._hold(i, held)
            return trajectories

    def _hold(self, i: int, version: int) -> None:
        self.held[i] = max(self.held[i], version)  # replies may arrive out of order

    def _replace(self, i: int, dead) -> None:
        with self._lock:
            self._replace_locked(i, dead)

    def _replace_locked(self, i: int, dead) -> None:
        """A fresh actor in place of `dead` (unless another share replaced it already),
        holding the newest weights."""
        import ray

        if self.workers[i] is not dead:
            return
        fresh = self.make_worker()
        assert self._weights is not None
        ref, version = self._weights
        self.held[i] = ray.get(fresh.publish.remote(ref, version))
        self.workers[i] = fresh
        self.replacements += 1
        self._counts["async/worker_replacements"] += 1

    @asynccontextmanager
    async def running(self):
        yield

    def metrics(self) -> dict[str, float]:
        out = dict(self._counts)
        self._counts = dict.fromkeys(out, 0.0)
        return out

    def close(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []

    @property
    def engine(self) -> RayEngine:
        """The workers as one `Engine`, with the newest weights (validation)."""
        return RayEngine(self)


class BroadcastAheadRollout:
    """The `RolloutProvider` of every training rank in an asynchronous Ray run: rank 0's
    `AsyncRollout` over a `RayProducer` (None on the other ranks), its batches broadcast."""

    def __init__(self, inner: AsyncRollout | None, model, tools: list, max_context_length: int):
        self.inner = inner
        self.model = model
        self._tools = tools
        self._max_context_length = max_context_length

    @property
    def tools(self) -> list:
        return self._tools

    @property
    def max_context_length(self) -> int:
        return self._max_context_length

    @property
    def engine(self):
        return self.inner.engine

    def run(self, samples: list[Sample], n: int, *, seed: int) -> list[Trajectory]:
        import torch.distributed as dist

        box: list = [None]
        if self.inner is not None:
            box[0] = self.inner.run(samples, n, seed=seed)
        dist.broadcast_object_list(box, src=0)
        return box[0]  # each turn carries the version that sampled it

    def weights_updated(self, version: int) -> None:
        if self.inner is not None:
            self.inner.weights_updated(version)  # its snapshot reads the full weights
        else:
            full_state_dict(self.model)  # this rank's part of the collective

    def metrics(self) -> dict[str, float]:
        return self.inner.metrics() if self.inner is not None else {}

    def samples_from(self, model) -> bool:
        return False

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def ray_async_rollout(
    make_worker: Callable[[], Any],
    num_workers: int,
    model,
    tools: list,
    max_context_length: int,
    *,
    plan: StepPlan,
    journal: Path,
    rank: int,
) -> BroadcastAheadRollout:
    """Rank `rank`'s provider: on rank 0 an `AsyncRollout` over `num_workers` new workers
    that start from the model's weights (the resumed checkpoint's) as version `plan.start`,
    noting the batches it starts in `journal`."""

    def snapshot() -> dict:
        return {k: v.cpu() for k, v in full_state_dict(model).items()}

    state = snapshot()  # every rank: a collective under FSDP2
    if rank != 0:
        return BroadcastAheadRollout(None, model, [], max_context_length)
    producer = RayProducer(make_worker, num_workers, state, plan.start)
    inner = AsyncRollout(
        producer, producer.engine, tools, max_context_length, plan, snapshot, journal=journal
    )
    return BroadcastAheadRollout(inner, model, tools, max_context_length)
