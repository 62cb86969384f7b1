"""An OpenAI-compatible HTTP server over any toolrl `Engine` (the standard library's http.server).

Routes:

- `GET /health`: `{"status": "ok", ...}` with request counts and `peak_running`, the most
  requests decoded in one batch so far;
- `GET /v1/models`: the one served model, with `max_model_len`;
- `POST /v1/completions`: `prompt` as text, token ids, or a list of either; `max_tokens`
  (default 16), `temperature`, `top_p`, `top_k`, `seed`, `n`, `logprobs`, and the vLLM
  extensions `stop_token_ids`, `ignore_eos`, `return_token_ids`, `return_tokens_as_token_ids`,
  `skip_special_tokens`, `include_stop_str_in_output`. Generation stops at the tokenizer's EOS
  (unless `ignore_eos`) and at `stop_token_ids`; the stop token is part of `token_ids`.
- `POST /v1/chat/completions`: `messages` and `tools` rendered by the model's chat template,
  hermes `<tool_call>` blocks parsed back into `tool_calls` (finish reason `tool_calls`).

Log-probs are those of the sampled tokens under log_softmax(logits / T), as the HF engine
computes them (`top_logprobs` are not computed). Text `stop` strings, streaming, `echo`,
penalties and `logit_bias` are refused with a 400 that says so. Every request runs through one
`EngineWorker`, so concurrent HTTP requests share the engine's decoding batches.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from toolrl.chat import ProtocolError, assistant_message, encode, render, template_messages
from toolrl.rollout.engines.base import Engine, GenerationRequest, GenerationResult
from toolrl.serving.worker import EngineWorker

_UNSUPPORTED = {
    "stream": "streaming is not supported",
    "echo": "echo is not supported",
    "suffix": "suffix is not supported",
    "stop": "text stop strings are not supported; use stop_token_ids",
    "logit_bias": "logit_bias is not supported",
    "presence_penalty": "presence_penalty is not supported",
    "frequency_penalty": "frequency_penalty is not supported",
}


class RequestError(Exception):
    """A request the server refuses: HTTP status and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.worker = EngineWorker(engine, max_batch_size=max_batch_size)
        self.started = time.time()
        self.http = ThreadingHTTPServer((host, port), _handler(self))
        self.http.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self.http.serve_forever(poll_interval=0.2)

    def start(self) -> OpenAIServer:
        """Serve on a background thread (tests, notebooks); `close` stops it."""
        self._thread = threading.Thread(target=self.serve_forever, name="toolrl-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.http.shutdown()
            self._thread.join(timeout=5)
        self.http.server_close()
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

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_common(body)
        if "prompt" not in body:
            raise RequestError(400, "`prompt` is required")
        prompts = self._prompts(body["prompt"])
        n = _integer(body, "n", 1, 1, 64)
        stops = _token_list(body, "stop_token_ids")
        if not body.get("ignore_eos") and self.tokenizer.eos_token_id is not None:
            stops.append(self.tokenizer.eos_token_id)
        requests = [
            self._request(prompt, body, _integer(body, "max_tokens", 16, 1), stops, i)
            for prompt in prompts
            for i in range(n)
        ]
        results = self.worker.generate(requests)
        choices = [
            self._completion_choice(index, request, result, body)
            for index, (request, result) in enumerate(zip(requests, results, strict=True))
        ]
        return self._envelope("text_completion", choices, prompts, results, n)

    def chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_common(body)
        try:
            messages = template_messages(body.get("messages") or [], "messages")
        except ProtocolError as err:
            raise RequestError(400, str(err)) from None
        if not messages:
            raise RequestError(400, "`messages` must be a non-empty list")
        tools = body.get("tools") or None
        if tools is not None and not (
            isinstance(tools, list) and all(isinstance(t, dict) and "function" in t for t in tools)
        ):
            raise RequestError(
                400, "`tools` must be a list of {'type': 'function', 'function': {...}}"
            )
        choice = body.get("tool_choice") or "auto"
        if choice not in ("auto", "none"):
            raise RequestError(400, f"tool_choice {choice!r} is not supported (use auto or none)")
        prompt = encode(
            self.tokenizer, render(self.tokenizer, messages, tools, add_generation_prompt=True)
        )
        self._check_length(prompt)
        default_max = self.max_model_len - len(prompt)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max
        stops = [self.tokenizer.eos_token_id]
        request = self._request(prompt, body, max_tokens, stops, 0)
        [result] = self.worker.generate([request])
        stopped = result.finish_reason == "stop"
        text = self.tokenizer.decode(result.token_ids[:-1] if stopped else result.token_ids)
        message = assistant_message(
            text, tools if choice == "auto" else None, f"call_{uuid.uuid4().hex[:12]}"
        )
        finish = "tool_calls" if message.get("tool_calls") else result.finish_reason
        out: dict[str, Any] = {
            "index": 0,
            "message": message,
            "finish_reason": finish,
            "logprobs": None,
        }
        if body.get("logprobs"):
            out["logprobs"] = {
                "content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                    for t, lp in zip(self._pieces(result.token_ids), result.logprobs, strict=True)
                ]
            }
        if body.get("return_token_ids"):
            out["token_ids"], out["prompt_token_ids"] = result.token_ids, prompt
        return self._envelope("chat.completion", [out], [prompt], [result], 1)

    # -- helpers -----------------------------------------------------------------------------

    def _check_common(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if model not in (None, "", self.model_name):
            raise RequestError(
                404, f"model {model!r} is not served here (this server serves {self.model_name!r})"
            )
        for key, why in _UNSUPPORTED.items():
            value = body.get(key)
            if value not in (None, False, 0, 0.0, "", [], {}):
                raise RequestError(400, f"`{key}`: {why}")
        best_of = body.get("best_of")
        if best_of not in (None, 1) and best_of != body.get("n", 1):
            raise RequestError(400, "`best_of` is not supported")

    def _prompts(self, prompt: Any) -> list[list[int]]:
        if isinstance(prompt, str) or (
            isinstance(prompt, list) and prompt and isinstance(prompt[0], int)
        ):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt:
            raise RequestError(
                400, "`prompt` must be text, token ids, or a non-empty list of either"
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
                    )
                ids = p
            else:
                raise RequestError(400, f"prompt {i} must be a string or a list of token ids")
            if not ids:
                raise RequestError(400, f"prompt {i} is empty")
            self._check_length(ids)
            out.append(ids)
        return out

    def _check_length(self, prompt: list[int]) -> None:
        if len(prompt) >= self.max_model_len:
            raise RequestError(
                400,
                f"the prompt has {len(prompt)} tokens; this model's context is {self.max_model_len}",
            )

    def _request(
        self, prompt: list[int], body: dict[str, Any], max_tokens: Any, stops: list[int], i: int
    ) -> GenerationRequest:
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, "`max_tokens` must be a positive integer")
        temperature = _number(body, "temperature", 1.0, 0.0, 100.0)
        top_p = _number(body, "top_p", 1.0, 1e-9, 1.0)
        top_k = _integer(body, "top_k", 0, -1)
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise RequestError(400, "`seed` must be an integer")
        return GenerationRequest(
            prompt_ids=list(prompt),
            # Clamped to the context: the result then ends with finish_reason "length".
            max_new_tokens=min(max_tokens, self.max_model_len - len(prompt)),
            temperature=temperature,
            top_p=top_p,
            top_k=max(top_k, 0),
            stop_token_ids=tuple(stops),
            seed=None if seed is None else seed + i,
        )

    def _completion_choice(
        self, index: int, request: GenerationRequest, result: GenerationResult, body: dict[str, Any]
    ) -> dict[str, Any]:
        ids = result.token_ids
        text_ids = ids
        if result.finish_reason == "stop" and not body.get("include_stop_str_in_output"):
            text_ids = ids[:-1]
        text = self.tokenizer.decode(
            text_ids, skip_special_tokens=body.get("skip_special_tokens", True)
        )
        choice: dict[str, Any] = {
            "index": index,
            "text": text,
            "logprobs": None,
            "finish_reason": result.finish_reason,
        }
        if body.get("logprobs") is not None:
            if body.get("return_tokens_as_token_ids"):
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
        if body.get("return_token_ids"):
            choice["token_ids"], choice["prompt_token_ids"] = ids, request.prompt_ids
        return choice

    def _pieces(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([t]) for t in ids]

    def _envelope(
        self,
        kind: str,
        choices: list[dict[str, Any]],
        prompts: list[list[int]],
        results: list[GenerationResult],
        n: int,
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


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(400, f"`{key}` must be a number in [{low:g}, {high:g}]")
    return float(value)


def _integer(
    body: dict[str, Any], key: str, default: int, low: int, high: int | None = None
) -> int:
    value = body.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        limit = f" in [{low}, {high}]" if high is not None else f" >= {low}"
        raise RequestError(400, f"`{key}` must be an integer{limit}")
    return value


def _token_list(body: dict[str, Any], key: str) -> list[int]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    ):
        raise RequestError(400, f"`{key}` must be a list of token ids")
    return list(value)


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    routes_get = {"/health": server.health, "/v1/models": server.models}
    routes_post = {
        "/v1/completions": server.completions,
        "/v1/chat/completions": server.chat_completions,
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "toolrl-serve"

        def do_GET(self) -> None:
            route = routes_get.get(self.path.split("?", 1)[0].rstrip("/") or "/")
            self._answer(lambda: route() if route else _not_found(self.path))

        def do_POST(self) -> None:
            route = routes_post.get(self.path.split("?", 1)[0].rstrip("/"))
            self._answer(lambda: route(self._body()) if route else _not_found(self.path))

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise RequestError(400, f"the request body is not valid JSON ({err})") from None
            if not isinstance(body, dict):
                raise RequestError(400, "the request body must be a JSON object")
            return body

        def _answer(self, produce) -> None:
            try:
                status, payload = 200, produce()
            except RequestError as err:
                status, payload = err.status, _error(err.status, str(err))
            except Exception as err:  # the engine failed: the client gets a 500 that says why
                status, payload = 500, _error(500, f"{type(err).__name__}: {err}")
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout): nothing to tell it

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the console during a rollout

    return Handler


def _not_found(path: str) -> dict[str, Any]:
    raise RequestError(
        404, f"no route {path} (try /health, /v1/models, /v1/completions, /v1/chat/completions)"
    )


def _error(status: int, message: str) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}
