"""An engine over an OpenAI-compatible HTTP server: `toolrl serve`, vLLM, SGLang, or a hosted API.

Two ways to talk to the server:

- `api="completions"` (exact): POST /v1/completions with the prompt as token ids, asking for the
  sampled token ids and their log-probs back (`return_token_ids`, `logprobs`, and the vLLM
  extensions `top_k`, `stop_token_ids`, `skip_special_tokens=false`). `toolrl serve` and recent
  vLLM honour these, so the agent loop stays token-in-token-out exactly as with a local engine.
  A server that returns no token ids is refused with an error naming `api="chat"`.
- `api="chat"` (for servers that only speak chat): the conversation is read back out of the
  prompt ids (`chat.ConversationReader`, checked by re-rendering), sent as messages
  with `tools`, and the reply is written back as the turn text the local chat template produces,
  then tokenized. What is lost: the server renders the prompt with its own template (the model
  may see different tokens than `prompt_ids`); the returned token ids are a re-tokenization of
  the reply, not the sampled ids; tool calls are re-serialized from the server's parse (JSON
  spacing and key order may differ from what the model wrote, and a malformed call the server
  could not parse arrives as plain text); reasoning a server splits off comes back as
  `<think>...</think>`; log-probs are 0.0 (unknown), so such trajectories are fit for SFT data
  and evaluation, not as the old policy of an RL step; `top_k` and `seed` are sent but a hosted
  API may ignore them; prompts must be an optional system message and one user message.

Requests run on a thread pool (`max_concurrency` in flight, over one pooled httpx client that
keeps its connections alive), each with a total `timeout` in
seconds that includes its retries: connection failures, timeouts that leave time, and HTTP
408/429/5xx are retried up to `max_retries` times with exponential backoff and jitter; other
HTTP errors fail at once with the server's message. Nothing here uses an event loop, so the
engine can be called from any thread (the agent loop calls it from a worker thread). It batches
continuously (`serve`): a request is sent the moment the loop asks for it, and its result goes
back the moment it arrives.
"""

from __future__ import annotations

import json
import random
import threading
import time
import warnings
from collections.abc import Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Literal

import httpx

from toolrl.chat import encode, end_of_turn_token
from toolrl.rollout.engines.base import (
    ContinuousEngine,
    Done,
    GenerationRequest,
    GenerationResult,
    Take,
    generate_by_serving,
)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
Api = Literal["completions", "chat"]


class OpenAIEngineError(RuntimeError):
    """The server could not be reached, timed out, or answered with an error; says which."""


class OpenAIEngine(ContinuousEngine):
    """An `Engine` whose tokens come from an OpenAI-compatible server (see the module docstring).

    `tokenizer` must be the served model's tokenizer: completions send and receive its token
    ids; chat mode uses its template to read prompts and write replies. `tools` (OpenAI function
    schemas) are sent with every chat request.
    """

    def __init__(
        self,
        base_url: str,
        tokenizer,
        *,
        api: Api = "completions",
        model: str | None = None,
        tools: list[dict] | None = None,
        max_concurrency: int = 16,
        timeout: float = 600.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        api_key: str | None = None,
    ):
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', not {api!r}")
        self.base_url = normalize_base_url(base_url)
        self.tokenizer = tokenizer
        self.api = api
        self.model = model
        self.tools = tools or None
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.api_key = api_key
        self.max_model_len = 0
        """The server's context length if /v1/models reports it (vLLM, toolrl serve), else 0."""
        self.eot_id = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
        self._pool: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()
        self._reader = None
        self._warned: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def check(self) -> list[str]:
        """GET /v1/models: the served model ids (and the context length, when reported).

        Fails fast with OpenAIEngineError when the server is unreachable; picks the first model
        when none was named, and refuses a named model the server does not list.
        """
        self._client()  # made first (it loads certificates): the deadline is the server's alone
        data = self._request("GET", "/v1/models", None, time.monotonic() + min(self.timeout, 30.0))
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list) or not models:
            raise OpenAIEngineError(f"{self.base_url}/v1/models lists no models: {str(data)[:200]}")
        ids = [str(m.get("id")) for m in models if isinstance(m, dict)]
        if self.model is None:
            self.model = ids[0]
        elif self.model not in ids:
            raise OpenAIEngineError(
                f"model {self.model!r} is not served at {self.base_url} (it serves {', '.join(ids)})"
            )
        chosen = next(m for m in models if str(m.get("id")) == self.model)
        self.max_model_len = int(chosen.get("max_model_len") or 0)
        return ids

    @property
    def max_context_length(self) -> int:
        return self.max_model_len

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the Engine protocol -----------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate for every request (up to `max_concurrency` in flight); results in order."""
        return generate_by_serving(self.serve, requests)

    def serve(
        self,
        take: Take,
        done: Done,
        poll_s: float = 0.005,
    ) -> None:
        """Send requests as `take` hands them over; call `done` as each result arrives; return
        when nothing is in flight and `take` has nothing new. The first failure raises."""
        if self.model is None:
            self.check()
        pool = self._executor()
        in_flight: dict[Future, Hashable] = {}
        try:
            while True:
                for key, request in take(max(0, self.max_concurrency - len(in_flight))):
                    in_flight[pool.submit(self._one, request)] = key
                if not in_flight:
                    return
                finished, _ = wait(in_flight, timeout=poll_s, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(in_flight.pop(future), future.result())
        finally:
            for future in in_flight:
                future.cancel()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.max_concurrency, thread_name_prefix="toolrl-openai"
                )
            return self._pool

    def _one(self, request: GenerationRequest) -> GenerationResult:
        self._client()
        deadline = time.monotonic() + self.timeout
        if self.api == "completions":
            return self._complete(request, deadline)
        return self._chat(request, deadline)

    # -- completions with token ids (exact) --------------------------------------------------

    def _complete(self, request: GenerationRequest, deadline: float) -> GenerationResult:
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": list(request.prompt_ids),
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "logprobs": 1,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
            "include_stop_str_in_output": True,
        }
        if request.top_k > 0:
            payload["top_k"] = request.top_k
        if request.stop_token_ids:
            payload["stop_token_ids"] = list(request.stop_token_ids)
        if request.seed is not None:
            payload["seed"] = request.seed
        choice = _first_choice(self._request("POST", "/v1/completions", payload, deadline))
        ids, logprobs = self._tokens_of(choice)
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        if (
            finish == "stop"
            and request.stop_token_ids
            and (not ids or ids[-1] not in request.stop_token_ids)
        ):
            # The server stopped (EOS or a stop string) without returning the token: the loop
            # needs the turn closed, so the end-of-turn token is appended, not sampled.
            self._warn_once(
                "stop",
                "the server stopped without returning the stop token; appended it (log-prob 0)",
            )
            ids, logprobs = [*ids, request.stop_token_ids[0]], [*logprobs, 0.0]
        return GenerationResult(
            ids[: request.max_new_tokens], logprobs[: request.max_new_tokens], finish
        )

    def _tokens_of(self, choice: dict[str, Any]) -> tuple[list[int], list[float]]:
        block = choice.get("logprobs") or {}
        ids = choice.get("token_ids")
        if ids is None:
            tokens = block.get("tokens") or []
            if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
                ids = [int(t.split(":", 1)[1]) for t in tokens]
        if ids is None:
            raise OpenAIEngineError(
                f"{self.base_url} returned no token ids for a completion (it ignores "
                "return_token_ids and return_tokens_as_token_ids): use api='chat' (--api chat), "
                "or a server that returns them (toolrl serve, vLLM)"
            )
        logprobs = block.get("token_logprobs")
        if not isinstance(logprobs, list) or len(logprobs) != len(ids):
            self._warn_once("logprobs", "the server returned no per-token log-probs; using 0.0")
            logprobs = [0.0] * len(ids)
        return [int(i) for i in ids], [float(x if x is not None else 0.0) for x in logprobs]

    # -- chat completions (for servers that only speak chat; see the module docstring) --------

    def _chat(self, request: GenerationRequest, deadline: float) -> GenerationResult:
        from toolrl.chat import (
            ConversationReader,
            ProtocolError,
            turn_text,
            wire_messages,
        )

        if self._reader is None:
            self._reader = ConversationReader(self.tokenizer, self.tools)
        try:
            messages = self._reader.read(self.tokenizer.decode(request.prompt_ids))
        except ProtocolError as err:
            raise OpenAIEngineError(f"chat completions: {err}") from err
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": wire_messages(messages, self.tools),
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if self.tools:
            payload["tools"] = self.tools
        if request.top_k > 0:
            payload["top_k"] = request.top_k
        if request.seed is not None:
            payload["seed"] = request.seed
        choice = _first_choice(self._request("POST", "/v1/chat/completions", payload, deadline))
        reply = choice.get("message")
        if not isinstance(reply, dict):
            raise OpenAIEngineError(
                f"{self.base_url}: a chat choice without a message: {str(choice)[:200]}"
            )
        ids = encode(self.tokenizer, turn_text(self.tokenizer, messages, self.tools, reply))
        if choice.get("finish_reason") == "length" or len(ids) >= request.max_new_tokens:
            ids = ids[: request.max_new_tokens]
            return GenerationResult(ids, [0.0] * len(ids), "length")
        return GenerationResult([*ids, self.eot_id], [0.0] * (len(ids) + 1), "stop")

    # -- HTTP --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, payload: dict | None, deadline: float) -> Any:
        """One JSON request with bounded retries inside `deadline` (time.monotonic seconds)."""
        url = self.base_url + path
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        http = self._client()
        started, attempt, last_problem = time.monotonic(), 0, ""
        budget = round(deadline - started, 1)  # what the caller allowed, as it was configured
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise httpx.TimeoutException("the deadline passed")
                response = http.request(
                    method, url, content=body, headers=headers, timeout=remaining
                )
            except httpx.TransportError as err:  # refused, reset, timed out, a broken answer
                timed_out = isinstance(err, httpx.TimeoutException)
                problem = (
                    f"no answer within {budget:g}s" if timed_out else f"{type(err).__name__}: {err}"
                )
                if timed_out and last_problem:
                    problem += f"; before that: {last_problem}"
                if attempt > self.max_retries or deadline - time.monotonic() <= 0:
                    raise OpenAIEngineError(
                        f"cannot get an answer from the OpenAI-compatible server at {self.base_url} "
                        f"({method} {path}: {problem}; {attempt} attempt(s) in "
                        f"{time.monotonic() - started:.1f}s). Is it running (e.g. `toolrl serve "
                        "MODEL --port N`), is the URL right, and is --timeout long enough?"
                    ) from None
                last_problem = problem
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except (json.JSONDecodeError, UnicodeDecodeError) as err:
                        raise OpenAIEngineError(
                            f"{method} {url}: the answer is not JSON: {response.content[:200]!r}"
                        ) from err
                message = _error_message(response)
                if response.status_code not in RETRY_STATUSES or attempt > self.max_retries:
                    raise OpenAIEngineError(
                        f"{method} {url}: HTTP {response.status_code}: {message}"
                        + (f" (after {attempt} attempts)" if attempt > 1 else "")
                    ) from None
                last_problem = f"HTTP {response.status_code}: {message}"
            pause = min(self.backoff * 2 ** (attempt - 1), self.max_backoff) * random.uniform(
                0.5, 1.0
            )
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    def _client(self) -> httpx.Client:
        """One pooled httpx client: `max_concurrency` connections, kept alive between requests."""
        with self._lock:
            if self._http is None:
                pool = httpx.Limits(
                    max_connections=self.max_concurrency,
                    max_keepalive_connections=self.max_concurrency,
                )
                self._http = httpx.Client(limits=pool)
            return self._http

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{self.base_url}: {message}", stacklevel=3)


def normalize_base_url(url: str) -> str:
    """`http://host:port` from `http://host:port/`, `.../v1` or `.../v1/`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the server URL must start with http:// or https://, not {url!r}")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _first_choice(data: Any) -> dict[str, Any]:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise OpenAIEngineError(f"the server's answer has no choices: {str(data)[:200]}")
    return choices[0]


def _error_message(response: httpx.Response) -> str:
    raw = response.content[:4000]
    try:
        data = json.loads(raw)
        error = data.get("error", data) if isinstance(data, dict) else data
        return str(error.get("message", error) if isinstance(error, dict) else error)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return raw.decode("utf-8", "replace").strip() or response.reason_phrase
