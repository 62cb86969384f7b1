"""The request bodies `toolrl serve` accepts, as pydantic models, and the OpenAI error format.

Every field a client may send is declared with its type and range; a value of the wrong type or
out of range, or a field not declared here, is a 400 whose message names the field. Fields the
OpenAI API defines but this server cannot honour are declared too (`UNSUPPORTED`), so that the
400 says why instead of "unknown field". Types are strict: `"0.7"` is not a temperature.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Temperature = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]

UNSUPPORTED = {
    "echo": "echo is not supported",
    "suffix": "suffix is not supported",
    "stop": "text stop strings are not supported; use stop_token_ids",
    "logit_bias": "logit_bias is not supported",
    "presence_penalty": "presence_penalty is not supported",
    "frequency_penalty": "frequency_penalty is not supported",
    "response_format": "response_format (JSON mode) is not supported",
    "functions": "the legacy `functions` field is not supported; send `tools`",
    "function_call": "the legacy `function_call` field is not supported; send `tool_choice`",
}
"""OpenAI parameters refused with a reason when set to anything but their neutral value."""


class RequestError(Exception):
    """A request the server refuses: HTTP status, a message for the client, the parameter."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    include_usage: bool = False


class _Common(BaseModel):
    """Sampling fields shared by both routes (vLLM's extensions included)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str | None = None
    n: Annotated[int, Field(ge=1, le=64)] = 1
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    seed: int | None = None
    max_tokens: PositiveInt | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    ignore_eos: bool = False
    return_token_ids: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    user: str | None = None
    best_of: int | None = None
    echo: Any = None
    suffix: Any = None
    stop: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    response_format: Any = None
    functions: Any = None
    function_call: Any = None


class CompletionRequest(_Common):
    """POST /v1/completions."""

    prompt: Any
    """Text, token ids, or a non-empty list of either (checked against the vocabulary later)."""
    logprobs: Annotated[int, Field(ge=0)] | None = None
    """0 or 1: the sampled tokens' log-probs (the engine computes no top alternatives)."""
    return_tokens_as_token_ids: bool = False
    TOP_KEY: ClassVar = ("logprobs", "send logprobs: 1")

    def top_alternatives(self) -> int:
        return max(0, (self.logprobs or 0) - 1)


class ChatCompletionRequest(_Common):
    """POST /v1/chat/completions."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    """Only 0: the engine returns the sampled tokens' log-probs, not the top alternatives."""
    TOP_KEY: ClassVar = ("top_logprobs", "send logprobs: true and top_logprobs: 0")

    def top_alternatives(self) -> int:
        return self.top_logprobs or 0


def parse(model: type[CompletionRequest | ChatCompletionRequest], body: Any) -> Any:
    """`body` validated as `model`; the first problem becomes a 400 naming its field."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate(body)
    except ValidationError as err:
        raise request_error(err) from None
    if request.top_alternatives():
        key, fix = request.TOP_KEY
        raise RequestError(
            400,
            f"`{key}`: top alternatives are not computed, only the sampled tokens' log-probs "
            f"({fix})",
            key,
        )
    for key, why in UNSUPPORTED.items():
        if getattr(request, key) not in (None, False, 0, 0.0, "", [], {}):
            raise RequestError(400, f"`{key}`: {why}", key)
    return request


def request_error(err: ValidationError) -> RequestError:
    """pydantic's first error as "`field`: why" (an undeclared field: "is not supported")."""
    first = err.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    param = loc[0] if loc else None
    where = ".".join(loc) or "body"
    if first.get("type") == "extra_forbidden":
        return RequestError(400, f"`{where}` is not a parameter this server supports", param)
    if first.get("type") == "missing":
        return RequestError(400, f"`{where}` is required", param)
    return RequestError(400, f"`{where}`: {first.get('msg', 'is invalid')}", param)


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def json_body(raw: bytes) -> Any:
    """The parsed body; text no tokenizer can take (a lone surrogate such as "\\ud800") is a 400."""
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the request body is not valid JSON ({err})") from None
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise RequestError(
            400, f"the request body holds a lone surrogate ({err.object[err.start]!r}): not text"
        ) from None
    return body
