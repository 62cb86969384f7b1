"""Serving a toolrl model over an OpenAI-compatible HTTP API (`toolrl serve`).

- `server.py`: the routes (/health, /v1/models, /v1/completions, /v1/chat/completions);
- `worker.py`: one engine thread that every request thread feeds, so requests share batches.

Between hermes tool-call text and OpenAI messages is `toolrl.chat.messages` (the OpenAI
engine's chat mode uses it too).
"""

from toolrl.serving.server import OpenAIServer
from toolrl.serving.worker import EngineWorker

__all__ = ["EngineWorker", "OpenAIServer"]
