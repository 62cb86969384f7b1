"""An engine driven by a Python policy instead of a network: text in, next turn's text out.

The policy sees the decoded context (prompt and everything so far) and returns the assistant's
next turn as text; the engine encodes it and appends the end-of-turn token. Used by the tests
(exact, deterministic turns) and by scripted teachers that really call tools, whose trajectories
then become SFT data. Log-probs and entropies are 0.0: a script is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

from toolrl.chat import encode, end_of_turn_token
from toolrl.rollout.engines.base import Engine, GenerationRequest, GenerationResult

Policy = Callable[[str], str]


class ScriptedEngine(Engine):
    """An `Engine` whose turns come from `policy(context_text) -> turn_text`."""

    def __init__(self, tokenizer, policy: Policy):
        self.tokenizer = tokenizer
        self.policy = policy
        self.eot_id = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
        self.calls: list[int] = []
        """Batch sizes of the generate calls, in order (for tests and benchmarks)."""

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(len(requests))
        return [self._one(r) for r in requests]

    def _one(self, request: GenerationRequest) -> GenerationResult:
        context = self.tokenizer.decode(request.prompt_ids)
        ids = [*encode(self.tokenizer, self.policy(context)), self.eot_id]
        finish = "length" if len(ids) > request.max_new_tokens else "stop"
        ids = ids[: request.max_new_tokens]
        certain = [0.0] * min(request.entropy_tokens, len(ids))  # a script's turn is certain
        return GenerationResult(ids, [0.0] * len(ids), finish, None, certain)
