"""The rollout seam: what the RL trainer calls to get trajectories.

`RolloutProvider` is the whole contract between `RLTrainer` and whatever produces its
trajectories; the trainer never looks behind it. Implementations:

- `LocalRollout` (here): one `AgentLoop` over an engine in this process (HF on the trained
  model itself, or vLLM with its weights synced from the trainer);
- `toolrl.distributed.launch.BroadcastRollout`: Ray rollout workers driven from training rank 0,
  the trajectories broadcast to every rank;
- `toolrl.rollout.async_rollout.AsyncRollout` (`trainer.mode=async`): batches produced ahead in
  this process, or by Ray workers (`toolrl.distributed.async_rollout.BroadcastAheadRollout`).

The seed of a rollout is an argument of `run`, never a setting mutated between calls, and the
trainer says after every update which weight version the policy now has (`weights_updated`).
"""

from __future__ import annotations

from typing import Any, Protocol

from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.base import Engine, PolicyEngine
from toolrl.tools.toolset import ToolSet
from toolrl.types import Sample, Trajectory


class RolloutProvider(Protocol):
    """Produces the trajectories of an RL step, with the trainer's current policy."""

    @property
    def engine(self) -> Engine:
        """An engine holding the current policy (validation generates with it)."""
        ...

    @property
    def tools(self) -> ToolSet:
        """The tools the trajectories call (validation offers the same)."""
        ...

    @property
    def max_context_length(self) -> int:
        """The model's window in tokens; 0 = unknown."""
        ...

    def run(self, samples: list[Sample], n: int, *, seed: int) -> list[Trajectory]:
        """n trajectories per sample in (sample, rollout) order; `seed` seeds every request."""
        ...

    def weights_updated(self, version: int) -> None:
        """The policy was updated to weight version `version` (the number of steps trained)."""
        ...

    def samples_from(self, model: Any) -> bool:
        """Whether the trajectories are sampled from `model`'s own parameters in this process
        (their log-probs are then the trainer's own, up to float rounding)."""
        ...

    def metrics(self) -> dict[str, float]:
        """What the provider measured since the last call (e.g. idle times); may be empty."""
        ...

    def close(self) -> None:
        """Stop whatever the provider runs in the background (the run is over)."""
        ...


def stamp_version(trajectories: list[Trajectory], version: int) -> list[Trajectory]:
    """Mark every turn as sampled by weight `version` (a synchronous rollout: all of them were)."""
    for t in trajectories:
        for turn in t.turns:
            turn.weight_version = version
    return trajectories


class LocalRollout:
    """A `RolloutProvider` in this process: an `AgentLoop` over a `PolicyEngine`."""

    def __init__(
        self, engine: PolicyEngine, tokenizer, tools: ToolSet | list[Any], settings: LoopSettings
    ):
        self.loop = AgentLoop(engine, tokenizer, tools, settings)
        self.version = 0

    @property
    def engine(self) -> PolicyEngine:
        return self.loop.engine  # type: ignore[return-value]

    @property
    def tools(self) -> ToolSet:
        return self.loop.tools

    @property
    def max_context_length(self) -> int:
        return self.loop.settings.max_context_length

    def run(self, samples: list[Sample], n: int, *, seed: int) -> list[Trajectory]:
        try:
            trajectories = self.loop.run(samples, n, seed=seed)
        finally:
            self.engine.rollout_done()
        return stamp_version(trajectories, self.version)

    def metrics(self) -> dict[str, float]:
        """The last rollout's branching statistics (`rollout/branch/*`; none without it)."""
        metrics, self.loop.branch_metrics = self.loop.branch_metrics, {}
        return metrics

    def close(self) -> None:
        pass

    def weights_updated(self, version: int) -> None:
        self.version = version
        self.engine.weights_updated()

    def samples_from(self, model: Any) -> bool:
        return self.engine.samples_from(model)
