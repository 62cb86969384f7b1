"""Between the OpenAI chat format and toolrl's hermes text, in both directions.

The model writes tool calls as hermes text inside its turn (`<tool_call>{json}</tool_call>`); an
OpenAI-compatible API carries them as structured `tool_calls` and answers them with `tool`
messages that name a `tool_call_id`. `toolrl serve` parses the model's text into the structured
form (`assistant_message`); the OpenAI engine's chat mode goes the other way: it reads the
conversation back out of the agent loop's token ids (`ConversationReader`) and turns it into
wire messages (`wire_messages`), then writes the server's answer as the turn text the local chat
template would have written (`turn_text`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from toolrl.chat.hermes import ParsedCall, parse_tool_calls
from toolrl.chat.template import ObservationWrapper, end_of_turn_token, render

_BLOCK = re.compile(r"<tool_call>.*?(?:</tool_call>|\Z)", re.DOTALL)
_MARK = "\u2063{}\u2063"


class ProtocolError(ValueError):
    """A conversation that cannot be carried over the OpenAI chat format; says why."""


def all_tool_calls(text: str, tools: list[dict] | None) -> list[ParsedCall]:
    """Every `<tool_call>` block of a turn, valid or not (no parallel-call limit)."""
    return parse_tool_calls(text, tools or [], max_parallel_calls=1 << 30)


def assistant_message(text: str, tools: list[dict] | None, id_prefix: str) -> dict[str, Any]:
    """The OpenAI assistant message for a turn the model wrote as hermes text.

    The blocks become `tool_calls` when every one of them is a JSON object with a name (an
    unknown tool name or wrong arguments still pass: the caller's tools decide); otherwise the
    text is returned whole as `content`, as vLLM's hermes parser does.
    """
    calls = all_tool_calls(text, tools) if tools and "<tool_call>" in text else []
    if not calls or any(not call.name for call in calls):
        return {"role": "assistant", "content": text}
    content = _BLOCK.sub("", text).strip()
    return {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {
                "id": f"{id_prefix}_{i}",
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": json.dumps(call.arguments, ensure_ascii=False),
                },
            }
            for i, call in enumerate(calls)
        ],
    }


def template_messages(messages: list[dict], where: str = "messages") -> list[dict[str, Any]]:
    """Wire messages as the chat template wants them: text parts joined, JSON arguments parsed."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "user",
            "assistant",
            "tool",
        ):
            raise ProtocolError(f"{where}[{i}] needs a role: system, user, assistant or tool")
        item = {"role": message["role"], "content": _text_content(message.get("content"), where, i)}
        calls = message.get("tool_calls") or []
        if calls:
            item["tool_calls"] = [
                _template_call(call, f"{where}[{i}].tool_calls[{j}]")
                for j, call in enumerate(calls)
            ]
        out.append(item)
    return out


def _text_content(content: Any, where: str, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" for part in content
    ):
        return "".join(str(part.get("text", "")) for part in content)
    raise ProtocolError(f"{where}[{i}].content must be a string or a list of text parts")


def _template_call(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ProtocolError(f"{where} must be {{'function': {{'name': ..., 'arguments': ...}}}}")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise ProtocolError(
                f"{where}.function.arguments is not valid JSON ({err.msg})"
            ) from err
    return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}


# ----------------------------------------------------------------------------------------------
# The OpenAI engine's chat mode: token ids -> conversation -> wire messages, and back


class ConversationReader:
    """Reads the conversation back out of the text of an agent-loop prompt.

    The agent loop sends token ids: the rendered prompt (an optional system message and one user
    message), then for each turn the model's text, its end-of-turn token and the tool results in
    the template's glue. This inverts that construction with the same template, and checks the
    result by rendering it again: a conversation it cannot reproduce exactly is refused.
    """

    def __init__(self, tokenizer, tools: list[dict] | None):
        self.tokenizer = tokenizer
        self.tools = tools or None
        self.eot = end_of_turn_token(tokenizer)
        self.wrapper = ObservationWrapper(tokenizer)
        self._prompt_patterns = [
            self._prompt_pattern(roles) for roles in (("system", "user"), ("user",))
        ]

    def _prompt_pattern(self, roles: tuple[str, ...]) -> tuple[tuple[str, ...], re.Pattern]:
        marked = [{"role": r, "content": _MARK.format(i)} for i, r in enumerate(roles)]
        text = render(self.tokenizer, marked, self.tools, add_generation_prompt=True)
        pattern = re.escape(text)
        for i in range(len(roles)):
            pattern = pattern.replace(re.escape(_MARK.format(i)), "(.*?)", 1)
        return roles, re.compile(pattern, re.DOTALL)

    def read(self, text: str) -> list[dict[str, Any]]:
        """The messages whose rendering (with a generation prompt) is exactly `text`.

        Assistant turns keep their text verbatim (hermes blocks included); each tool result is a
        `tool` message. Raises ProtocolError when the text is not such a conversation.
        """
        messages, pos = self._read_prompt(text)
        while pos < len(text):
            end = text.find(self.eot, pos)
            if end < 0:
                raise ProtocolError(
                    "the prompt ends inside an assistant turn; chat completions cannot continue a "
                    "partial turn (use the completions API with token ids)"
                )
            turn = text[pos:end]
            messages.append({"role": "assistant", "content": turn})
            pos = end + len(self.eot)
            count = len(all_tool_calls(turn, self.tools))
            if not count:
                raise ProtocolError(
                    "an assistant turn without a tool call is followed by more text"
                )
            results, pos = self._read_observation(text, pos, count)
            messages += [{"role": "tool", "content": r} for r in results]
        again = render(self.tokenizer, messages, self.tools, add_generation_prompt=True)
        if again != text:
            raise ProtocolError(
                "the conversation read back from the prompt does not render to the same text "
                "with this chat template; chat completions cannot carry it exactly"
            )
        return messages

    def _read_prompt(self, text: str) -> tuple[list[dict[str, Any]], int]:
        for roles, pattern in self._prompt_patterns:
            match = pattern.match(text)
            if match:
                messages = [
                    {"role": r, "content": c} for r, c in zip(roles, match.groups(), strict=True)
                ]
                return messages, match.end()
        raise ProtocolError(
            "the prompt is not an (optional) system message and one user message rendered by "
            "this chat template; chat completions support only such prompts"
        )

    def _read_observation(self, text: str, pos: int, count: int) -> tuple[list[str], int]:
        pieces = self.wrapper.pieces(count)
        pattern = re.escape(pieces[0]) + "".join("(.*?)" + re.escape(piece) for piece in pieces[1:])
        match = re.compile(pattern, re.DOTALL).match(text, pos)
        if not match:
            raise ProtocolError(
                f"expected {count} tool result(s) in the template's glue at character {pos}"
            )
        return list(match.groups()), match.end()


def wire_messages(messages: list[dict[str, Any]], tools: list[dict] | None) -> list[dict[str, Any]]:
    """Conversation messages (assistant turns as hermes text) as OpenAI wire messages.

    Each assistant turn's blocks become `tool_calls` with ids `call_<turn>_<i>`, and the tool
    results that follow answer them in order. A turn whose blocks do not all parse keeps its text
    as content, and its results go back as user messages (the API has no call to attach them to).
    """
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            wire = assistant_message(message["content"], tools, f"call_{i}")
            pending = [call["id"] for call in wire.get("tool_calls", [])]
            out.append(wire)
        elif message["role"] == "tool" and pending:
            out.append(
                {"role": "tool", "tool_call_id": pending.pop(0), "content": message["content"]}
            )
        elif message["role"] == "tool":
            out.append({"role": "user", "content": message["content"]})
        else:
            out.append(dict(message))
    return out


def turn_text(
    tokenizer, messages: list[dict[str, Any]], tools: list[dict] | None, reply: dict[str, Any]
) -> str:
    """The text the local chat template writes for the server's assistant `reply` after
    `messages` (without the end-of-turn token): hermes blocks for its tool calls, and any
    `reasoning_content` put back as `<think>...</think>` before the content."""
    content = reply.get("content") or ""
    if reply.get("reasoning_content"):
        content = f"<think>\n{reply['reasoning_content'].strip()}\n</think>\n\n{content}"
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reply.get("tool_calls"):
        message["tool_calls"] = [
            _template_call(call, f"reply.tool_calls[{j}]")
            for j, call in enumerate(reply["tool_calls"])
        ]
    eot = end_of_turn_token(tokenizer)
    before = render(tokenizer, messages, tools, add_generation_prompt=True)
    after = render(tokenizer, [*messages, message], tools)
    end = after.find(eot, len(before))
    if after.startswith(before) and end >= 0:
        return after[len(before) : end]
    # A template that rewrites history: write the hermes blocks the way Qwen's template does.
    blocks = "".join(
        "\n<tool_call>\n"
        + json.dumps(
            {"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
            ensure_ascii=False,
        )
        + "\n</tool_call>"
        for c in message.get("tool_calls", [])
    )
    return (content + blocks) if content else blocks.lstrip("\n")
