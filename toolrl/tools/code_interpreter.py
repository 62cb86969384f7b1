"""The `code_interpreter` tool: run the model's Python in the sandbox, return what it printed.

As in the paper (Open-AgentRL): one required string parameter `code`; the observation is the
program's stdout and stderr, middle-truncated to 256 characters by default. In addition:

- if the argument contains a fenced code block, the first Python block is what runs (models
  often wrap code in ```python fences inside the JSON argument);
- the value of a trailing expression is printed the way a notebook shows it (repr, nothing for
  None), decided with `ast` on the last top-level statement — never by wrapping a statement
  such as `x = 5` in print;
- timeouts and memory or output limits end the observation with one short line saying so;
- tracebacks name the program `main.py` rather than its sandbox path, to save characters.
"""

from __future__ import annotations

import ast
import re
import time
from typing import Any

from toolrl.chat import CODE_INTERPRETER, CODE_INTERPRETER_SCHEMA
from toolrl.sandbox.backend import SandboxBackend
from toolrl.sandbox.result import Limits, RunResult
from toolrl.tools.base import ToolResult

NAME = CODE_INTERPRETER
_VALUE = "__toolrl_value__"
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_TRACEBACK_PATH = re.compile(r'File "[^"\n]*/main\.py"')


def extract_code(text: str) -> str:
    """The first fenced Python block of `text` (``` python/py/python3 or a bare fence), else
    `text` itself."""
    blocks = _FENCE.findall(text)
    for language, body in blocks:
        if language.lower() in ("python", "py", "python3"):
            return body
    for language, body in blocks:
        if not language:
            return body
    return text


def add_notebook_print(code: str) -> str:
    """Print the value of a trailing expression statement like a notebook (repr, not None).

    Only the last top-level statement is considered, and only if it is an expression: code
    whose last statement is an assignment, a loop, an import, ... is returned unchanged, as is
    code that does not parse (so the model sees Python's own SyntaxError).
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return code
    last = tree.body[-1]
    source = code.encode("utf-8")
    # ast offsets are (1-based line, UTF-8 byte column): convert them to byte offsets.
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    start = line_starts[last.lineno - 1] + last.col_offset
    end = line_starts[last.end_lineno - 1] + last.end_col_offset  # type: ignore[operator]
    # What follows the last statement can only be blanks, ';' and comments: drop it.
    wrapped = (
        source[:start]
        + f"{_VALUE} = (".encode()
        + source[start:end]
        + f"\n)\nif {_VALUE} is not None:\n    print(repr({_VALUE}))\n".encode()
    )
    return wrapped.decode("utf-8")


def middle_truncate(text: str, max_chars: int) -> str:
    """Keep the start and the end of `text` within `max_chars`, with a visible marker between.

    A non-positive `max_chars` disables truncation.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text

    def marker(kept: int) -> str:
        return f"\n...[{len(text) - kept} characters truncated]...\n"

    keep = max_chars - len(marker(max_chars))
    while keep > 0 and keep + len(marker(keep)) > max_chars:
        keep -= 1  # the count may gain a digit as fewer characters are kept
    if keep <= 0:
        return text[:max_chars]
    head, tail = keep - keep // 2, keep // 2
    return text[:head] + marker(keep) + (text[-tail:] if tail else "")


def format_observation(result: RunResult) -> str:
    """stdout, then stderr, then a one-line note if a limit stopped the program."""
    run = result.run_result
    if result.status == "SandboxError" or run is None:
        return f"Sandbox error (not caused by your code): {result.message or 'unknown'}"
    text = run.stdout
    if run.stderr:
        text += ("" if not text or text.endswith("\n") else "\n") + run.stderr
    text = _TRACEBACK_PATH.sub('File "main.py"', text)
    note = _limit_note(result)
    if note:
        text += ("" if not text or text.endswith("\n") else "\n") + note
    return text if text.strip() else "(no output)"


def _limit_note(result: RunResult) -> str:
    run = result.run_result
    limit = run.limit_exceeded if run else None
    if limit in ("time", "cpu_time"):
        return "TimeoutError: the code ran too long and was stopped."
    if limit == "memory":
        return "MemoryError: the code used too much memory and was stopped."
    if limit == "output":
        return "OutputLimitError: the code printed too much output and was stopped."
    if limit == "file_size":
        return "FileSizeError: the code wrote a file larger than allowed."
    return ""


def tool_sandbox(tools, sandbox: SandboxBackend | None = None) -> tuple[SandboxBackend, Limits]:
    """The sandbox (`sandbox` when given, else the local one or the server at
    `tools.sandbox_url`) and the per-run limits a `ToolsConfig` gives the sandboxed tools."""
    from toolrl.sandbox.factory import build_sandbox

    limits = Limits(timeout_s=tools.timeout, memory_mb=tools.memory_mb)
    if sandbox is None:
        sandbox = build_sandbox(
            tools.sandbox_url or None, limits=limits, max_concurrency=tools.max_concurrent
        )
    return sandbox, limits


class CodeInterpreter:
    """The `code_interpreter` tool over any sandbox backend (local or remote)."""

    name = NAME

    def __init__(
        self,
        sandbox: SandboxBackend,
        *,
        max_output_chars: int = 256,
        limits: Limits | None = None,
        notebook_print: bool = True,
    ) -> None:
        self.sandbox = sandbox
        self.max_output_chars = max_output_chars
        self.limits = limits
        self.notebook_print = notebook_print

    @classmethod
    def from_config(cls, tools, sandbox: SandboxBackend | None = None) -> CodeInterpreter:
        """The tool as a `ToolsConfig` describes it: the local sandbox, or the SandboxFusion /
        toolrl server at `tools.sandbox_url`, with the tool's time and memory limits (`sandbox`:
        one already built that way, shared with other tools)."""
        sandbox, limits = tool_sandbox(tools, sandbox)
        return cls(sandbox, max_output_chars=tools.output_max_chars, limits=limits)

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI function schema: one required string parameter, `code`."""
        return CODE_INTERPRETER_SCHEMA

    def prepare(self, code: str) -> str:
        """The program that actually runs for a given `code` argument."""
        code = extract_code(code)
        return add_notebook_print(code) if self.notebook_print else code

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        """Run `arguments["code"]`; errors of the code are observations, never exceptions."""
        started = time.perf_counter()
        code = arguments.get("code") if isinstance(arguments, dict) else None
        if not isinstance(code, str):
            text = "Error: code_interpreter needs one string argument, `code`."
            return ToolResult(text, "error", time.perf_counter() - started, {})
        result = await self.sandbox.run(self.prepare(code), limits=self.limits)
        if result.status == "Success":
            status = "success"
        elif result.status == "SandboxError":
            status = "infra_error"
        else:
            status = "error"
        full = format_observation(result)
        text = middle_truncate(full, self.max_output_chars)
        run = result.run_result
        info = {
            "isolation": result.isolation,
            "sandbox_status": result.status,
            "run_status": run.status if run else None,
            "return_code": run.return_code if run else None,
            "limit_exceeded": run.limit_exceeded if run else None,
            "execution_time": run.execution_time if run else None,
            "truncated": len(text) < len(full),
        }
        return ToolResult(text, status, time.perf_counter() - started, info)
