"""Generation engines: token ids in, token ids + log-probs + finish reason out.

An engine is anything with `generate(requests) -> results` (the `Engine` protocol in base.py).
The agent loop never hands an engine text and never re-tokenizes what it returns.
"""

from toolrl.rollout.engines.base import Engine, GenerationRequest, GenerationResult

__all__ = ["Engine", "GenerationRequest", "GenerationResult"]
