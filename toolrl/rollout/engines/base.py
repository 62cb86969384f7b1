"""The engine contract shared by the HF, vLLM and OpenAI-compatible engines."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal, Protocol

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


@dataclass
class GenerationResult:
    token_ids: list[int]
    logprobs: list[float]
    """log π(token) under the temperature-scaled distribution, log_softmax(logits / T), before
    top-p / top-k truncation: the quantity the trainer recomputes as the old policy."""
    finish_reason: FinishReason
    """`stop`: a stop token was emitted; `length`: max_new_tokens reached."""


class Engine(Protocol):
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate for every request; results are in request order."""
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
