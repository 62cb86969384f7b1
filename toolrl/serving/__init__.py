"""Serving a toolrl model over an OpenAI-compatible HTTP API (`toolrl serve`), on FastAPI + uvicorn.

- `server.py`: `OpenAIServer`, what each route answers (/health, /v1/models, /v1/completions,
  /v1/chat/completions);
- `app.py`: the FastAPI app (routing, OpenAI-format errors, SSE responses);
- `protocol.py`: the request bodies as pydantic models (a bad parameter is a 400 naming it);
- `streaming.py`: `stream: true` as the OpenAI API's chunks;
- `worker.py`: one engine thread that every request feeds, so requests share batches.

Between hermes tool-call text and OpenAI messages is `toolrl.chat.messages` (the OpenAI
engine's chat mode uses it too).
"""

from toolrl.serving.server import OpenAIServer
from toolrl.serving.worker import EngineWorker

__all__ = ["EngineWorker", "OpenAIServer"]
