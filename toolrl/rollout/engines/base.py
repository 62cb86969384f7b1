"""The engine contract shared by every engine, and the capabilities an engine declares.

`Engine` is what every engine is (token ids in; token ids, log-probs and a finish reason out).
An engine that can do more says so by subclassing a capability Protocol, and the code that needs
the capability asks for it by that Protocol, never by the engine's class:

- `ContinuousEngine`: batches continuously (`serve`): the agent loop and the server feed it
  requests between decoding steps instead of waiting for a whole batch;
- `PolicyEngine`: follows the trained policy through an RL run: told after every update,
  asked whether it samples from the trained model's own parameters (then its log-probs are the
  trainer's own), and told when a rollout ends (vLLM then sleeps to free the GPU).

Engines subclass the Protocols explicitly, so they inherit the defaults below (`close` does
nothing; `max_context_length` is 0, unknown).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass
class GenerationRequest:
    """Continue `prompt_ids` by at most `max_new_tokens` sampled tokens."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    """0 samples greedily."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = no top-k truncation."""
    stop_token_ids: tuple[int, ...] = ()
    """Generation stops after emitting one of these (it is included in the output)."""
    seed: int | None = None
    """Seeds this request's own sampling noise: the same seed gives the same tokens whatever
    else is in the batch."""
    entropy_tokens: int = 0
    """Report the entropy of the sampling distribution for the first this-many sampled tokens
    (`GenerationResult.entropies`; 0 = none). Only an engine that says so reports them (HF; a
    scripted engine's are 0: its turns are certain)."""
    shares_prefix: bool = False
    """The prompt is a prefix a sibling request already ran (a branch from a trajectory's
    midpoint): the engine may reuse that sibling's keys and values for it."""


@dataclass
class GenerationResult:
    token_ids: list[int]
    logprobs: list[float]
    """log π(token) under the temperature-scaled distribution, log_softmax(logits / T), before
    top-p / top-k truncation: the quantity the trainer recomputes as the old policy."""
    finish_reason: FinishReason
    """`stop`: a stop token was emitted; `length`: max_new_tokens reached."""
    weight_version: int | None = None
    """The weight version that generated it, from an engine that tracks versions (the
    asynchronous trainer's); None = the engine does not say."""
    entropies: list[float] = field(default_factory=list)
    """H = −Σ_v p(v) log p(v) of p = softmax(logits / T) (nats, untruncated, like `logprobs`)
    for the first `request.entropy_tokens` sampled tokens."""


class Engine(Protocol):
    """Generates for token-id requests; never sees or returns text."""

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate for every request; results are in request order."""
        ...

    @property
    def max_context_length(self) -> int:
        """The model's context window in tokens (prompt + response); 0 = unknown."""
        return 0

    def close(self) -> None:
        """Release what the engine holds (threads, processes, connections); idempotent."""
        return None


@runtime_checkable
class ContinuousEngine(Protocol):
    """An engine that batches continuously: requests join the running batch between steps.
    (Checked at run time by its one method, so it does not repeat `Engine`'s.)"""

    def serve(self, take: Take, done: Done) -> None:
        """Decode until nothing runs and `take` has nothing new (see `Take` and `Done`)."""
        ...


class PolicyEngine(Engine, Protocol):
    """An engine that follows the trained policy through an RL run (HF on the trained model
    itself; vLLM with its weights synced from the trainer)."""

    def weights_updated(self) -> None:
        """The trained policy changed: generate with the new weights from now on (the engine
        may take them now or just before its next generation)."""
        ...

    def samples_from(self, model: Any) -> bool:
        """Whether this engine decodes with `model`'s own parameters in this process, so its
        log-probs are the trainer's forward's up to float rounding."""
        ...

    def rollout_done(self) -> None:
        """A rollout ended and training follows: free what training needs (vLLM sleeps)."""
        ...


Take = Callable[[int], list[tuple[Hashable, GenerationRequest]]]
"""A continuous engine's source of work: `take(room)` hands over up to `room` (key, request).
Engines call it between every two steps, also when `room` is 0, because it may raise to end
`serve` early (the rollout it decodes for has ended); the exception goes to `serve`'s caller."""
Done = Callable[[Hashable, GenerationResult], None]
"""Called with a request's key and result the moment it finishes."""


def generate_by_serving(
    serve: Callable[[Take, Done], None], requests: list[GenerationRequest]
) -> list[GenerationResult]:
    """`Engine.generate` for an engine that batches continuously (`serve(take, done)`): every
    request is fed through `serve`; results in request order."""
    pending = list(enumerate(requests))
    results: dict[Hashable, GenerationResult] = {}

    def take(room: int) -> list[tuple[Hashable, GenerationRequest]]:
        taken = pending[:room]
        del pending[:room]
        return taken

    serve(take, results.__setitem__)
    return [results[i] for i in range(len(requests))]
