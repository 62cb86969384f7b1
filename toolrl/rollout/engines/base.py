"""The engine contract shared by the HF, vLLM and OpenAI-compatible engines."""

from __future__ import annotations

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
