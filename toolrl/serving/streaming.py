"""Server-sent events for `stream: true`, in the chunk format of the OpenAI API.

The engines hand back whole results (`Engine.generate` / `serve` resolve a request when it
finishes), so a streamed response starts once its choices are generated; it is then sent as
the API sends it: completions one chunk per token, chat a role delta, content deltas, each
tool call as a delta with its id and name and then its arguments in pieces, a last chunk per
choice with its finish reason, a usage chunk when `stream_options.include_usage`, and
`data: [DONE]`. Clients that read streams (the openai SDK, LangChain, ...) work unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

ARGUMENT_PIECE = 16
"""Characters of a tool call's JSON arguments per delta."""


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def text_pieces(tokenizer, ids: list[int], **decode) -> list[str]:
    """The text each token adds, decoding prefixes so multi-byte characters come out whole."""
    pieces, before = [], ""
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k], **decode)
        if text.endswith("\ufffd") and k < len(ids):
            pieces.append("")  # half a character: it comes with the next token
            continue
        pieces.append(text[len(before) :])
        before = text
    return pieces


def completion_chunks(
    head: dict[str, Any],
    choices: list[tuple[dict[str, Any], list[str], list[float] | None]],
    usage: dict[str, int] | None,
) -> Iterator[str]:
    """`head` (id, object, created, model) + per choice (final choice, pieces, log-probs)."""
    for choice, pieces, logprobs in choices:
        for k, piece in enumerate(pieces):
            delta: dict[str, Any] = {"index": choice["index"], "text": piece, "finish_reason": None}
            delta["logprobs"] = (
                {"tokens": [piece], "token_logprobs": [logprobs[k]], "top_logprobs": None}
                if logprobs is not None
                else None
            )
            yield sse({**head, "choices": [delta]})
        last = {"index": choice["index"], "text": "", "logprobs": None}
        yield sse({**head, "choices": [{**last, "finish_reason": choice["finish_reason"]}]})
    yield from _usage_and_done(head, usage)


def chat_chunks(
    head: dict[str, Any], choices: list[dict[str, Any]], usage: dict[str, int] | None
) -> Iterator[str]:
    """`head` (id, object "chat.completion.chunk", created, model) + the final chat choices."""

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs=None):
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**head, "choices": [choice]})

    for choice in choices:
        index, message = choice["index"], choice["message"]
        yield chunk(index, {"role": "assistant", "content": ""})
        if message.get("content"):
            yield chunk(index, {"content": message["content"]}, logprobs=choice.get("logprobs"))
        for i, call in enumerate(message.get("tool_calls") or []):
            function = call["function"]
            opening = {"name": function["name"], "arguments": ""}
            first = {"index": i, "id": call["id"], "type": "function", "function": opening}
            yield chunk(index, {"tool_calls": [first]})
            arguments = function["arguments"]
            for at in range(0, len(arguments), ARGUMENT_PIECE):
                part = {"arguments": arguments[at : at + ARGUMENT_PIECE]}
                yield chunk(index, {"tool_calls": [{"index": i, "function": part}]})
        yield chunk(index, {}, choice["finish_reason"])
    yield from _usage_and_done(head, usage)


def _usage_and_done(head: dict[str, Any], usage: dict[str, int] | None) -> Iterator[str]:
    if usage is not None:
        yield sse({**head, "choices": [], "usage": usage})
    yield sse("[DONE]")
