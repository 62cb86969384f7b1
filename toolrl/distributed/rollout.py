"""Rollout workers as Ray actors, and the rollout provider that spreads a step over them.

Each `RolloutWorker` holds one engine (HF on CPU or GPU, vLLM on a GPU) and runs the ordinary
`AgentLoop` on it. `RayRollout` runs a step's rollout over the workers (rank 0's
`BroadcastRollout` calls it: the step only sees that `RolloutProvider`):

- the step's prompts are split into contiguous runs of whole groups, one run per worker (a GRPO
  group stays on one engine, whose prefill then shares the prompt);
- the workers roll out concurrently; results are put back in (sample, rollout) order;
- a worker that dies (`RayActorError`: killed, node lost, out of memory) is replaced by a fresh
  actor, which receives the current weights and re-runs that worker's groups. A group's
  trajectories come back whole or not at all, so each trajectory is in the batch exactly once;
  and since rollouts are seeded per (step, sample, rollout, turn), the re-run gives the
  trajectories the dead worker would have given.

Weights go from the trainer to the workers through Ray's object store: one `ray.put` of the
state dict per step, read by every worker (zero-copy for workers on the same node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolrl.types import Sample, Trajectory


class RolloutWorker:
    """One engine and an agent loop over it (the body of a Ray actor).

    `config`: the run's Config as a plain dict; the policy is loaded from `model.path` and then
    replaced by whatever `load_weights` receives. `tools_factory` builds the tools in the
    worker's own process (a sandbox pool tool, or the local code interpreter).
    """

    def __init__(self, config: dict[str, Any], tools_factory: Callable[[], list] | None = None):
        import torch

        from toolrl.config import from_dict
        from toolrl.rollout.agent_loop import AgentLoop, settings_from_config
        from toolrl.rollout.engines.factory import build_engine, load_tokenizer
        from toolrl.trainers.model_io import load_policy, resolve_model_path
        from toolrl.trainers.rl_setup import default_tools, run_dir_of

        torch.set_num_threads(1)  # a CPU worker shares the machine with the others
        self.config = from_dict(config, source="rollout worker")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        path = resolve_model_path(self.config.model.path, run_dir_of(self.config))
        self.model = None  # vLLM loads the weights itself
        if self.config.rollout.engine == "vllm":
            tokenizer = load_tokenizer(str(path))
        else:  # HF decodes with `self.model`, which `load_weights` overwrites
            self.model, tokenizer = load_policy(path, self.config.model, device=device)
            self.model.eval()
        self.engine = build_engine(
            self.config,
            path,
            tokenizer=tokenizer,
            model=self.model,
            device=device,
            needs_policy=True,
            purpose="a Ray rollout worker",
        )
        tools = tools_factory() if tools_factory else default_tools(self.config)
        settings = settings_from_config(
            self.config.rollout,
            tools=self.config.tools,
            max_context_length=self.engine.max_context_length,
        )
        self.loop = AgentLoop(self.engine, tokenizer, tools, settings)
        self.version = -1

    def load_weights(self, state: dict, version: int) -> int:
        """Take the trainer's weights (a state dict); returns the version now held."""
        self.load_state(state)
        self.version = version
        return version

    def load_state(self, state: dict) -> None:
        """Put a state dict into the engine's weights."""
        if self.model is not None:  # the HF engine decodes with `self.model` itself
            self.model.load_state_dict(state)
        else:  # vLLM: wake the weights, overwrite them, then re-allocate the KV cache
            asleep = self.engine.asleep
            if asleep:
                self.engine.wake_up(tags=["weights"])
            self.engine.load_weights(state.items())
            if asleep:
                self.engine.wake_up(tags=["kv_cache"])

    def rollout(self, groups: list[Sample], n: int, seed: int) -> list[Trajectory]:
        """n trajectories for every sample of `groups`, seeded by the step's `seed`.
        A vLLM engine then sleeps, leaving its GPU share to the colocated training rank."""
        try:
            return self.loop.run(groups, n, seed=seed)
        finally:
            if self.model is None:
                self.engine.sleep()

    def generate(self, requests: list) -> list:
        """Plain generation, for evaluation through `RayEngine` (a sleeping vLLM engine wakes)."""
        if getattr(self.engine, "asleep", False):
            self.engine.wake_up()
        return self.engine.generate(requests)

    def ping(self) -> int:
        return self.version


def split_groups(samples: list[Sample], parts: int) -> list[list[int]]:
    """Indices of `samples` in `parts` contiguous runs whose sizes differ by at most one."""
    base, extra = divmod(len(samples), parts)
    runs, start = [], 0
    for part in range(parts):
        size = base + (1 if part < extra else 0)
        runs.append(list(range(start, start + size)))
        start += size
    return runs


class RayRollout:
    """A step's rollouts over `num_workers` Ray actors made by `make_worker()`.

    `make_worker` returns a new, started actor handle (placement and resources are the
    launcher's business). `max_replacements` bounds how many dead workers one `run` replaces
    before it gives up with an error naming the cause.
    """

    def __init__(
        self,
        make_worker: Callable[[], Any],
        num_workers: int,
        *,
        max_replacements: int = 4,
    ):
        import ray

        if num_workers < 1:
            raise ValueError(
                f"a Ray rollout needs at least one worker, got num_workers={num_workers}"
            )
        self.make_worker = make_worker
        self.max_replacements = max_replacements
        self.workers = [make_worker() for _ in range(num_workers)]
        ray.get([w.ping.remote() for w in self.workers])  # fail here if a worker cannot start
        self.replacements = 0
        self.in_flight: dict[Any, int] = {}
        self._weights: tuple[Any, int] | None = None

    def push_weights(self, state: dict, version: int) -> None:
        """Send the trainer's weights to every worker (and keep them for replacements)."""
        import ray

        ref = ray.put(state)
        self._weights = (ref, version)
        ray.get([w.load_weights.remote(ref, version) for w in self.workers])

    def run(self, samples: list[Sample], n: int, *, seed: int) -> list[Trajectory]:
        """n trajectories per sample, spread over the workers, in (sample, rollout) order;
        `seed` seeds every request (as in `AgentLoop.run`)."""
        import ray
        from ray.exceptions import RayActorError

        runs = [r for r in split_groups(samples, len(self.workers)) if r]
        self.in_flight = {
            self._submit(worker, run, samples, n, seed): (worker, run)
            for worker, run in enumerate(runs)
        }
        done: dict[int, list[Trajectory]] = {}
        replaced = 0
        while self.in_flight:
            ready, _ = ray.wait(list(self.in_flight), num_returns=1)
            worker, run = self.in_flight.pop(ready[0])
            try:
                trajectories = ray.get(ready[0])
            except RayActorError as err:
                replaced += 1
                if replaced > self.max_replacements:
                    raise RuntimeError(
                        f"rollout worker {worker} died and {self.max_replacements} replacements "
                        f"did not finish the step; last error: {err}"
                    ) from err
                self._replace(worker)
                self.in_flight[self._submit(worker, run, samples, n, seed)] = (worker, run)
                continue
            for position, index in enumerate(run):
                done[index] = trajectories[position * n : (position + 1) * n]
        return [t for index in range(len(samples)) for t in done[index]]

    def _submit(self, worker: int, run: list[int], samples, n: int, seed: int):
        groups = [samples[i] for i in run]
        return self.workers[worker].rollout.remote(groups, n, seed)

    def _replace(self, worker: int) -> None:
        """A fresh actor in place of a dead one, holding the current weights."""
        import ray

        self.replacements += 1
        fresh = self.make_worker()
        if self._weights is not None:
            ref, version = self._weights
            ray.get(fresh.load_weights.remote(ref, version))
        else:
            ray.get(fresh.ping.remote())
        self.workers[worker] = fresh

    @property
    def engine(self) -> RayEngine:
        """The workers as one `Engine` (for evaluation, which drives its own agent loop)."""
        return RayEngine(self)

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []


class RayEngine:
    """`Engine.generate` spread over the `workers` of a `RayRollout` (or of an asynchronous
    `RayProducer`), requests split evenly."""

    def __init__(self, rollout):
        self.rollout = rollout

    def generate(self, requests: list) -> list:
        import ray

        workers = self.rollout.workers
        parts = [requests[i :: len(workers)] for i in range(len(workers))]
        outs = ray.get([w.generate.remote(p) for w, p in zip(workers, parts, strict=True) if p])
        results: list = [None] * len(requests)
        for i, out in enumerate(outs):
            results[i :: len(workers)] = out
        return results
