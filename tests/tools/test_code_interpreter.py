"""The code_interpreter tool: code extraction, notebook printing, truncation, status mapping."""

from __future__ import annotations

import ast
import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrl.sandbox.local import Sandbox
from toolrl.sandbox.result import CommandResult, Limits, RunResult
from toolrl.tools import CodeInterpreter, Tool
from toolrl.tools.code_interpreter import add_notebook_print, extract_code, middle_truncate


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox("auto", allow_weak_isolation=True, limits=Limits(timeout_s=2)) as box:
        yield box


def call(tool: CodeInterpreter, arguments: dict):
    return asyncio.run(tool.call(arguments))


class FakeBackend:
    """Returns a fixed result and records the code it was asked to run."""

    limits = Limits()
    isolation = "fake"

    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.codes: list[str] = []

    async def run(self, code, stdin="", limits=None, files=None, fetch_files=()):
        self.codes.append(code)
        return self.result

    def run_sync(self, *args, **kwargs):
        raise NotImplementedError

    def close(self) -> None:
        pass


def test_schema_matches_the_paper() -> None:
    tool = CodeInterpreter(FakeBackend(RunResult("Success")))
    assert isinstance(tool, Tool)
    function = tool.schema["function"]
    assert tool.schema["type"] == "function" and function["name"] == "code_interpreter"
    assert function["parameters"]["required"] == ["code"]
    assert function["parameters"]["properties"]["code"]["type"] == "string"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("print(1)", "print(1)"),
        ("Run this:\n```python\nprint(2)\n```\nthanks", "print(2)"),
        ("```\nprint(3)\n```", "print(3)"),
        ("```bash\nls\n```\n```py\nprint(4)\n```\n```python\nprint(5)\n```", "print(4)"),
        ("```python\nprint(6)", "print(6)"),  # unclosed fence: to the end
    ],
)
def test_extract_code(text: str, expected: str) -> None:
    assert extract_code(text).strip() == expected


@pytest.mark.parametrize(
    ("code", "printed"),
    [
        ("x = 5", None),
        ("x = 5\nx", "5"),
        ("1 + 1", "2"),
        ("print('hi')", "hi"),  # print returns None: nothing more is printed
        ("import math; math.pi  # trailing comment", repr(3.141592653589793)),
        ("'text'", "'text'"),
        ("None", None),
        ("for i in range(3):\n    i", None),
        ("x = [1,\n     2]\nsum(x) + \\\n  1", "4"),
        ("é = 2\né * 3", "6"),
        ("def f():\n    return 7\nf()", "7"),
        ("(1 +\n # comment\n 2)", "3"),
    ],
)
def test_notebook_printing(code: str, printed: str | None, capsys) -> None:
    exec(compile(add_notebook_print(code), "<test>", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert (lines[-1] if lines else None) == printed


def test_statements_are_never_wrapped() -> None:
    for code in ("x = 5", "import os", "del x", "assert True", "x += 1", "if x:\n    y"):
        assert add_notebook_print(code) == code
    assert add_notebook_print("def (:") == "def (:"  # Python's own SyntaxError is kept


@given(st.text(max_size=2000), st.integers(min_value=1, max_value=600))
def test_middle_truncation_properties(text: str, limit: int) -> None:
    out = middle_truncate(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    elif "characters truncated]" in out:
        head, _, rest = out.partition("\n...[")
        count, _, tail = rest.partition(" characters truncated]...\n")
        assert text.startswith(head) and text.endswith(tail)
        assert int(count) == len(text) - len(head) - len(tail)


def test_default_truncation_is_256_characters(sandbox: Sandbox) -> None:
    result = call(CodeInterpreter(sandbox), {"code": "print('a' * 1000 + 'END')"})
    assert len(result.text) <= 256 and result.text.rstrip().endswith("END")
    assert "characters truncated" in result.text and result.info["truncated"]


def test_runs_in_the_sandbox(sandbox: Sandbox) -> None:
    tool = CodeInterpreter(sandbox)
    result = call(
        tool,
        {"code": "```python\nimport sympy\nx = sympy.Symbol('x')\nsympy.expand((x + 1)**2)\n```"},
    )
    assert result.status == "success", result
    assert result.text == "x**2 + 2*x + 1\n"
    assert result.info["isolation"] == sandbox.isolation and result.elapsed_s > 0


def test_errors_are_observations(sandbox: Sandbox) -> None:
    tool = CodeInterpreter(sandbox, max_output_chars=1000)
    result = call(tool, {"code": "print('before')\n1 / 0"})
    assert result.status == "error"
    assert result.text.startswith("before\n") and "ZeroDivisionError" in result.text
    assert 'File "main.py", line 2' in result.text  # short path, no sandbox directory


def test_timeout_and_memory_messages(sandbox: Sandbox) -> None:
    tool = CodeInterpreter(sandbox, limits=Limits(timeout_s=0.5, memory_mb=128))
    slow = call(tool, {"code": "print('started', flush=True)\nwhile True: pass"})
    assert slow.status == "error"
    assert slow.text == "started\nTimeoutError: the code ran too long and was stopped."
    big = call(tool, {"code": "x = bytearray(4 * 1024**3)"})
    assert big.status == "error" and big.text.endswith(
        "MemoryError: the code used too much memory and was stopped."
    )


def test_sandbox_failure_is_an_infra_error() -> None:
    backend = FakeBackend(RunResult.sandbox_error("worker exited"))
    result = call(CodeInterpreter(backend), {"code": "print(1)"})
    assert result.status == "infra_error" and "worker exited" in result.text


def test_bad_arguments_and_empty_output() -> None:
    backend = FakeBackend(RunResult("Success", CommandResult("Finished", return_code=0)))
    tool = CodeInterpreter(backend)
    assert call(tool, {"cod": "print(1)"}).status == "error"
    assert backend.codes == []
    assert call(tool, {"code": "x = 1"}).text == "(no output)"
    ast.parse(backend.codes[-1])
