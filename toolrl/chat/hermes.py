"""Hermes tool calls: the text the model writes to call a tool, parsed and built in one place.

A call is `<tool_call>\n{"name": NAME, "arguments": {...}}\n</tool_call>` inside an assistant
turn (Qwen's format). `parse_tool_calls` reads a turn's calls against the offered schemas;
`tool_call_text` writes one (the scripted teachers, stitched data and the template check use
it). `CODE_INTERPRETER_SCHEMA` is the one schema of the paper's tool, used by the tool itself,
the tiny tokenizer, the data tools and the tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CODE_INTERPRETER = "code_interpreter"
CODE_INTERPRETER_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": CODE_INTERPRETER,
        "description": (
            "Execute Python code and return what it prints (stdout and stderr). The value of a "
            "final expression is printed as in a notebook. numpy and sympy are available; there "
            "is no network."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}
"""The OpenAI function schema of the paper's one tool, `code_interpreter(code)`."""

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """One hermes tool call as the model writes it."""
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{call}\n{TOOL_CALL_CLOSE}"


def code_interpreter_call(code: str) -> str:
    """A `code_interpreter` call running `code`."""
    return tool_call_text(CODE_INTERPRETER, {"code": code})


def has_tool_call(text: str) -> bool:
    """Whether an assistant turn opens a tool call (the agent loop then runs its tools)."""
    return TOOL_CALL_OPEN in text


_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_JSON_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}


@dataclass
class ParsedCall:
    """One `<tool_call>` of an assistant turn: a valid call, or the error the model will read."""

    name: str
    arguments: dict[str, Any]
    error: str | None = None


def parse_tool_calls(text: str, tools: list[dict], max_parallel_calls: int = 1) -> list[ParsedCall]:
    """Parse hermes `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks.

    Never raises on model output: malformed JSON, an unknown tool, missing or extra arguments,
    an unterminated block, and calls beyond `max_parallel_calls` come back with `error` set, so the
    loop can show the model what was wrong and count it.
    """
    schemas = {tool["function"]["name"]: tool["function"] for tool in tools}
    calls = [_parse_one(body, schemas) for body in _TOOL_CALL_RE.findall(text)]
    tail = _TOOL_CALL_RE.sub("", text)
    if "<tool_call>" in tail:
        calls.append(ParsedCall("", {}, "unterminated <tool_call>: close it with </tool_call>"))
    for call in calls[max_parallel_calls:]:
        if call.error is None:
            call.error = (
                f"only {max_parallel_calls} tool call(s) per turn are run; this one was skipped"
            )
    return calls


def _parse_one(body: str, schemas: dict[str, dict]) -> ParsedCall:
    try:
        payload = json.loads(body.strip())
    except json.JSONDecodeError as err:
        return ParsedCall("", {}, f"tool call is not valid JSON: {err.msg} at char {err.pos}")
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return ParsedCall(
            "", {}, 'tool call must be a JSON object {"name": ..., "arguments": {...}}'
        )
    name, arguments = payload["name"], payload.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return ParsedCall(name, {}, "tool call arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return ParsedCall(name, {}, "tool call arguments must be a JSON object")
    if name not in schemas:
        known = ", ".join(sorted(schemas)) or "none"
        return ParsedCall(name, arguments, f"unknown tool {name!r}; available: {known}")
    error = _check_arguments(arguments, schemas[name].get("parameters", {}))
    return ParsedCall(name, arguments, error)


def _check_arguments(arguments: dict, parameters: dict) -> str | None:
    properties = parameters.get("properties", {})
    missing = [key for key in parameters.get("required", []) if key not in arguments]
    if missing:
        return f"missing required argument(s): {', '.join(missing)}"
    extra = [key for key in arguments if key not in properties]
    if extra and properties:
        return f"unexpected argument(s): {', '.join(extra)}; expected: {', '.join(properties)}"
    for key, value in arguments.items():
        expected = _JSON_TYPES.get(properties.get(key, {}).get("type", ""))
        if expected is not None and not isinstance(value, expected):
            return f"argument {key!r} must be of type {properties[key]['type']}"
    return None
