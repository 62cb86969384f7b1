"""An OpenAI-compatible HTTP server over any toolrl `Engine` (FastAPI on uvicorn).

Routes:

- `GET /health`: `{"status": "ok", ...}` with request counts and `peak_running`, the most
  requests decoded in one batch so far;
- `GET /v1/models`: the one served model, with `max_model_len`;
- `POST /v1/completions`: `prompt` as text, token ids, or a list of either; `max_tokens`
  (default 16), `temperature`, `top_p`, `top_k`, `seed`, `n`, `logprobs` (0 or 1), `stream`,
  and the vLLM extensions `stop_token_ids`, `ignore_eos`, `return_token_ids`,
  `return_tokens_as_token_ids`, `skip_special_tokens`, `include_stop_str_in_output`.
  Generation stops at the tokenizer's EOS (unless `ignore_eos`) and at `stop_token_ids`; the
  stop token is part of `token_ids`.
- `POST /v1/chat/completions`: `messages` and `tools` rendered by the model's chat template,
  `n` choices, hermes `<tool_call>` blocks parsed back into `tool_calls` (finish reason
  `tool_calls`), `logprobs`, `stream`.

Every request body is validated by its pydantic model (`protocol.py`): a wrong type, a value out
of range, or a parameter this server does not support is a 400 naming it. Log-probs are those
of the sampled tokens under log_softmax(logits / T), as the HF engine computes them; top
alternatives (`top_logprobs` > 0, completions `logprobs` > 1) are not computed and are refused,
as are text `stop` strings, `echo`, penalties and `logit_bias`. Streaming sends the OpenAI chunk
format once a request's choices are generated (see `streaming.py`). Every request runs through
one `EngineWorker`, so concurrent HTTP requests share the engine's decoding batches; the event
loop awaits their futures, so no thread waits per request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from toolrl.asgi import AppServer
from toolrl.chat import ProtocolError, assistant_message, encode, render, template_messages
from toolrl.rollout.engines.base import Engine, GenerationRequest, GenerationResult
from toolrl.serving import streaming
from toolrl.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    RequestError,
    parse,
)
from toolrl.serving.worker import EngineWorker

__all__ = ["OpenAIServer", "RequestError"]


class OpenAIServer:
    """Serves `engine` (with `tokenizer`) at http://host:port; `port=0` picks a free port."""

    def __init__(
        self,
        engine: Engine,
        tokenizer,
        *,
        model_name: str,
        max_model_len: int,
        host: str = "127.0.0.1",
        port: int = 0,
        max_batch_size: int = 64,
    ):
        from toolrl.serving.app import build_app

        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.started = time.time()
        self.http = AppServer(build_app(self), host, port)
        self.worker = EngineWorker(engine, max_batch_size=max_batch_size)

    @property
    def url(self) -> str:
        return self.http.base_url

    def serve_forever(self) -> None:
        """Serve until SIGINT or SIGTERM (then shut down gracefully and return)."""
        self.http.serve_forever()

    def start(self) -> OpenAIServer:
        """Serve on a background thread (tests, notebooks); `close` stops it."""
        self.http.start()
        return self

    def close(self) -> None:
        self.http.close()
        self.worker.close()

    def __enter__(self) -> OpenAIServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- routes ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.model_name,
            "requests_done": self.worker.requests_done,
            "peak_running": self.worker.peak_running,
            "uptime_s": round(time.time() - self.started, 1),
        }

    def models(self) -> dict[str, Any]:
        model = {
            "id": self.model_name,
            "object": "model",
            "created": int(self.started),
            "owned_by": "toolrl",
            "max_model_len": self.max_model_len,
        }
        return {"object": "list", "data": [model]}

    async def completions(self, body: Any) -> dict[str, Any] | Any:
        """The completion response (or, with `stream`, an iterator of SSE lines)."""
        req = parse(CompletionRequest, body)
        self._check_common(req)
        prompts = self._prompts(req.prompt)
        stops = list(req.stop_token_ids or [])
        if not req.ignore_eos and self.tokenizer.eos_token_id is not None:
            stops.append(self.tokenizer.eos_token_id)
        requests = [
            self._request(prompt, req, req.max_tokens or 16, stops, i)
            for prompt in prompts
            for i in range(req.n)
        ]
        results = await self._generate(requests)
        choices = [
            self._completion_choice(index, request, result, req)
            for index, (request, result) in enumerate(zip(requests, results, strict=True))
        ]
        out = self._envelope("text_completion", choices, prompts, results)
        if not req.stream:
            return out
        decode = {"skip_special_tokens": req.skip_special_tokens}
        streamed = []
        for choice, result in zip(choices, results, strict=True):
            texts = streaming.text_pieces(self.tokenizer, result.token_ids, **decode)
            if result.finish_reason == "stop" and not req.include_stop_str_in_output and texts:
                texts[-1] = ""  # the stop token's text is left out, as without streaming
            logprobs = result.logprobs if req.logprobs is not None else None
            streamed.append((choice, texts, logprobs))
        return streaming.completion_chunks(_head(out), streamed, _usage_if(req, out))

    async def chat_completions(self, body: Any) -> dict[str, Any] | Any:
        """The chat completion response (or, with `stream`, an iterator of SSE lines)."""
        req = parse(ChatCompletionRequest, body)
        self._check_common(req)
        try:
            messages = template_messages(req.messages, "messages")
        except ProtocolError as err:
            raise RequestError(400, str(err), "messages") from None
        if not messages:
            raise RequestError(400, "`messages` must be a non-empty list", "messages")
        tools = req.tools or None
        if tools is not None and not all("function" in t for t in tools):
            raise RequestError(
                400, "`tools` must be a list of {'type': 'function', 'function': {...}}", "tools"
            )
        choice = req.tool_choice or "auto"
        if choice not in ("auto", "none"):
            raise RequestError(
                400, f"tool_choice {choice!r} is not supported (use auto or none)", "tool_choice"
            )
        prompt = encode(
            self.tokenizer, render(self.tokenizer, messages, tools, add_generation_prompt=True)
        )
        self._check_length(prompt)
        max_tokens = req.max_completion_tokens or req.max_tokens or self.max_model_len
        stops = [self.tokenizer.eos_token_id]
        requests = [self._request(prompt, req, max_tokens, stops, i) for i in range(req.n)]
        results = await self._generate(requests)
        parse_tools = tools if choice == "auto" else None
        choices = [self._chat_choice(i, r, req, parse_tools) for i, r in enumerate(results)]
        for out_choice in choices:
            if req.return_token_ids:
                out_choice["prompt_token_ids"] = prompt
        out = self._envelope("chat.completion", choices, [prompt], results)
        if not req.stream:
            return out
        head = {**_head(out), "object": "chat.completion.chunk"}
        return streaming.chat_chunks(head, choices, _usage_if(req, out))

    # -- helpers -----------------------------------------------------------------------------

    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        futures = self.worker.submit(requests)
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    def _check_common(self, req) -> None:
        if req.model not in (None, "", self.model_name):
            raise RequestError(
                404,
                f"model {req.model!r} is not served here (this server serves {self.model_name!r})",
                "model",
            )
        if req.best_of not in (None, 1, req.n):
            raise RequestError(400, "`best_of` is not supported", "best_of")

    def _prompts(self, prompt: Any) -> list[list[int]]:
        if isinstance(prompt, str) or (
            isinstance(prompt, list) and prompt and isinstance(prompt[0], int)
        ):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt:
            raise RequestError(
                400, "`prompt` must be text, token ids, or a non-empty list of either", "prompt"
            )
        vocab = len(self.tokenizer)
        out = []
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                ids = encode(self.tokenizer, p)
            elif isinstance(p, list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in p
            ):
                bad = [t for t in p if not 0 <= t < vocab]
                if bad:
                    raise RequestError(
                        400,
                        f"prompt {i}: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})",
                        "prompt",
                    )
                ids = p
            else:
                raise RequestError(
                    400, f"prompt {i} must be a string or a list of token ids", "prompt"
                )
            if not ids:
                raise RequestError(400, f"prompt {i} is empty", "prompt")
            self._check_length(ids)
            out.append(ids)
        return out

    def _check_length(self, prompt: list[int]) -> None:
        if len(prompt) >= self.max_model_len:
            raise RequestError(
                400,
                f"the prompt has {len(prompt)} tokens; this model's context is {self.max_model_len}",
                "prompt",
            )

    def _request(
        self, prompt: list[int], req, max_tokens: int, stops: list[int], i: int
    ) -> GenerationRequest:
        return GenerationRequest(
            prompt_ids=list(prompt),
            # Clamped to the context: the result then ends with finish_reason "length".
            max_new_tokens=min(max_tokens, self.max_model_len - len(prompt)),
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=max(req.top_k or 0, 0),
            stop_token_ids=tuple(stops),
            seed=None if req.seed is None else req.seed + i,
        )

    def _completion_choice(
        self, index: int, request: GenerationRequest, result: GenerationResult, req
    ) -> dict[str, Any]:
        ids = result.token_ids
        text_ids = ids
        if result.finish_reason == "stop" and not req.include_stop_str_in_output:
            text_ids = ids[:-1]
        text = self.tokenizer.decode(text_ids, skip_special_tokens=req.skip_special_tokens)
        choice: dict[str, Any] = {
            "index": index,
            "text": text,
            "logprobs": None,
            "finish_reason": result.finish_reason,
        }
        if req.logprobs is not None:
            if req.return_tokens_as_token_ids:
                tokens = [f"token_id:{t}" for t in ids]
            else:
                tokens = self._pieces(ids)
            offsets, at = [], 0
            for token in tokens:
                offsets.append(at)
                at += len(token)
            choice["logprobs"] = {
                "tokens": tokens,
                "token_logprobs": result.logprobs,
                "top_logprobs": None,
                "text_offset": offsets,
            }
        if req.return_token_ids:
            choice["token_ids"], choice["prompt_token_ids"] = ids, request.prompt_ids
        return choice

    def _chat_choice(
        self, index: int, result: GenerationResult, req, tools: list[dict] | None
    ) -> dict[str, Any]:
        stopped = result.finish_reason == "stop"
        text = self.tokenizer.decode(result.token_ids[:-1] if stopped else result.token_ids)
        message = assistant_message(text, tools, f"call_{uuid.uuid4().hex[:12]}")
        finish = "tool_calls" if message.get("tool_calls") else result.finish_reason
        out: dict[str, Any] = {
            "index": index,
            "message": message,
            "finish_reason": finish,
            "logprobs": None,
        }
        if req.logprobs:
            out["logprobs"] = {
                "content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                    for t, lp in zip(self._pieces(result.token_ids), result.logprobs, strict=True)
                ]
            }
        if req.return_token_ids:
            out["token_ids"] = result.token_ids
        return out

    def _pieces(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([t]) for t in ids]

    def _envelope(
        self,
        kind: str,
        choices: list[dict[str, Any]],
        prompts: list[list[int]],
        results: list[GenerationResult],
    ) -> dict[str, Any]:
        prompt_tokens = sum(len(p) for p in prompts)
        completion_tokens = sum(len(r.token_ids) for r in results)
        return {
            "id": f"{'cmpl' if kind == 'text_completion' else 'chatcmpl'}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _head(out: dict[str, Any]) -> dict[str, Any]:
    return {key: out[key] for key in ("id", "object", "created", "model")}


def _usage_if(req, out: dict[str, Any]) -> dict[str, int] | None:
    return out["usage"] if req.stream_options and req.stream_options.include_usage else None
