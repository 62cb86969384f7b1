"""LiveCodeBench's way of running a program, reproduced to run *inside the sandbox*.

This file is sent as the sandbox's `main.py` with `main()` appended and the problem on stdin
(JSON: `code`, `inputs`, `outputs`, `fn_name`, `timeout`), so it uses only the standard
library. It reproduces the execution semantics of LiveCodeBench's grader (`run_test` in
`lcb_runner/evaluation/testing_util.py`, checked against nvidia-livecodebench 26.3), so that a
verdict here is the verdict there, quirks included:

- Before any candidate code runs, the process disables what LiveCodeBench's
  `reliability_guard` disables: `quit` and `help` become None (`exit` stays), as do `os.kill`,
  `os.fork`, `os.getcwd`, `os.chdir`, file removal and renaming, `subprocess.Popen` and a few
  more; fd 0 is /dev/null, as in LiveCodeBench's worker process.
- **stdin/stdout problems**: a *last* top-level `if __name__ == '__main__':` is replaced by its
  body; top-level imports are hoisted; every other statement becomes the body of one function,
  compiled under the import header in a module named `tmp_sol`, so the program's variables are
  that function's locals (`global x` then finds no `x`). Each test calls the function once with
  `sys.stdin` a `StringIO` of the input (no newline translation: `\\r` stays in the line, no
  `.buffer`), `read`/`readline`/`readlines` patched on the stdin object that was in place
  before (what `from sys import stdin` bound), `builtins.open` mocked (the module's own `open`,
  from the header, is still the real one: `open(0)` reads /dev/null), and `sys.stdout`
  captured in memory until the function returns (a thread printing later is not seen). A
  `SystemExit` of any code counts as a normal return; the output is then compared
  (`stdout_matches`). Code whose text contains `class Solution` anywhere, even in a comment, is
  taken for LeetCode: `Solution()` is looked up at module level, which a wrapped program has not.
- **functional problems** (`fn_name`): the code runs as the module; if its text contains
  `class Solution`, one `Solution()` serves every test. Each test calls the function on the
  JSON arguments (one per line); a tuple counts as a list; the value is compared with `==`
  against the expected value here, in the process it came from.
- The compilation and every test run under `signal.alarm(timeout)`; the first test that does
  not pass ends the run (the rest are not run). An exception escaping the harness itself, or a
  process that ends early (`os._exit`), fails every test.

Per-test codes, as LiveCodeBench's: `true` passed, `-2` wrong answer, `-3` time limit, `-4`
runtime error. They leave as one line on the original stdout, `VERDICT_PREFIX` + JSON
`{"results": [...], "error": str}`; the candidate's own writes to fds 1 and 2 go to /dev/null,
as nobody reads them in LiveCodeBench either, so output size does not matter.

This is not a security boundary and not anti-cheat: as in LiveCodeBench, the expected outputs
live in the process the candidate runs in. The sandbox around it is the boundary.

The import header and the output comparison are defined here, and `code.py` uses them too.
"""

from __future__ import annotations

import ast
import io
import json
import os
import signal
import sys
import types
from contextlib import ExitStack, suppress
from decimal import Decimal, InvalidOperation
from unittest import mock  # imported before the guard below disables parts of `os`

VERDICT_PREFIX = "@@toolrl-lcb-verdict "
_HEADER_MODULES = (  # noqa: SIM905 (a word list reads better than 18 quoted names)
    "string re datetime collections heapq bisect copy math random statistics itertools "
    "functools operator io sys json builtins typing"
).split()
IMPORT_HEADER = (
    "".join(f"from {m} import *\n" for m in _HEADER_MODULES)
    + "".join(f"import {m}\n" for m in _HEADER_MODULES if m not in ("builtins", "typing"))
    + "sys.setrecursionlimit(50000)\n"
)
"""The modules LiveCodeBench's runner imports before a candidate's code (`from builtins
import *` comes last so that, e.g., `re.compile` does not shadow `compile`)."""

WRONG_ANSWER, TIME_LIMIT, RUNTIME_ERROR = -2, -3, -4


# ----------------------------------------------------------------------------------------------
# Output comparison (LiveCodeBench's rules; the isolated grader uses them in the trusted process)


def _stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def stdout_matches(output: str, expected: str) -> bool:
    """LiveCodeBench's stdin/stdout check: after stripping the whole text and splitting it into
    lines, each stripped, the two have as many lines and each pair is equal, or else both split
    on whitespace into numbers that are equal as `Decimal`s ("1.0" = "1", "2e3" = "2000")."""
    got, want = _stripped_lines(output), _stripped_lines(expected)
    if len(got) != len(want):
        return False
    for got_line, want_line in zip(got, want, strict=True):
        if got_line == want_line:
            continue
        got_numbers, want_numbers = _decimals(got_line), _decimals(want_line)
        if got_numbers is None or want_numbers is None or got_numbers != want_numbers:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# The program as LiveCodeBench compiles it


def unwrap_last_main_guard(code: str) -> str:
    """A last top-level `if __name__ == '__main__':` replaced by its body (its `else` dropped);
    any other code, or code that does not parse, is returned as it is."""
    try:
        body = ast.parse(code).body
        last = body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            return ast.unparse(body[:-1]) + "\n" + ast.unparse(last.body)
    except Exception:  # empty code, bad syntax: LiveCodeBench keeps the code as it is
        pass
    return code


def as_function(code: str) -> str:
    """The import header, the code's top-level imports, then everything else as the body of
    `wrapped_function()`; code that does not parse is returned as it is."""
    try:
        body = ast.parse(code).body
        imports = [s for s in body if isinstance(s, ast.Import | ast.ImportFrom)]
        no_arguments = ast.arguments(
            posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]
        )
        wrapped = ast.FunctionDef(
            name="wrapped_function",
            args=no_arguments,
            body=[s for s in body if s not in imports],
            decorator_list=[],
            lineno=1,
            **({"type_params": []} if "type_params" in ast.FunctionDef._fields else {}),
        )
        return f"{IMPORT_HEADER}\n{ast.unparse(imports)}\n{ast.unparse(wrapped)}"
    except Exception:  # as LiveCodeBench: the unchanged code then fails to compile
        return code


class TimeoutException(Exception):
    """Raised by the alarm. As in LiveCodeBench, an error is a time limit when
    `timeoutexception` is in its repr (so the class keeps that name)."""


def _on_alarm(signum, frame):
    print("time limit: alarm")  # as LiveCodeBench's handler, a line on the (captured) stdout
    raise TimeoutException


def _compile(code: str, timeout: int):
    """Run `code` as the module `tmp_sol` under the alarm; its `Solution()` when the text
    mentions `class Solution`, else the module."""
    signal.alarm(timeout)
    try:
        module = types.ModuleType("tmp_sol", "")
        exec(code, module.__dict__)
        return module.Solution() if "class Solution" in code else module
    finally:
        signal.alarm(0)


def _failure(code: int, err: BaseException | None, results: list) -> tuple[list, str]:
    return [*results, code], repr(err) if err is not None else ""


def _code_of(err: Exception) -> int:
    return TIME_LIMIT if "timeoutexception" in repr(err).lower() else RUNTIME_ERROR


# ----------------------------------------------------------------------------------------------
# stdin/stdout problems


class _CapturedStdout:
    """`sys.stdout` is a StringIO while the block runs; `.text` holds what was written."""

    def __enter__(self):
        self._saved = sys.stdout
        self._buffer = io.StringIO()
        # LiveCodeBench's no-op close takes one argument: `sys.stdout.close()` raises TypeError.
        self._buffer.close = lambda _unused: 1
        sys.stdout = self._buffer
        return self

    def __exit__(self, *exc_info):
        self.text = self._buffer.getvalue()
        sys.stdout = self._saved


def _call_with_input(function, given) -> None:
    """Call `function()` with the test's input in place, as LiveCodeBench's `call_method`."""
    if isinstance(given, list):
        given = "\n".join(given)
    lines = iter(given.split("\n"))
    # LiveCodeBench stacks five mock.patch decorators, which take effect bottom first: the
    # stdin methods are patched on the object in place *before* sys.stdin becomes the StringIO.
    with ExitStack() as patches:
        patches.enter_context(mock.patch("sys.stdin.read", lambda *_: given))
        patches.enter_context(mock.patch("sys.stdin.readlines", lambda *_: given.split("\n")))
        patches.enter_context(mock.patch("sys.stdin.readline", lambda *_: next(lines)))
        patches.enter_context(mock.patch("sys.stdin", io.StringIO(given)))
        patches.enter_context(mock.patch("builtins.open", mock.mock_open(read_data=given)))
        with suppress(SystemExit):
            function()


def run_stdio(code: str, inputs: list, outputs: list, timeout: int) -> tuple[list, str]:
    """(codes, error): one code per test run, stopping at the first that does not pass."""
    solution = _compile(as_function(unwrap_last_main_guard(code)), timeout)
    function = getattr(solution, "wrapped_function", None)
    if function is None:
        raise LookupError("the compiled program has no wrapped_function")
    results: list = []
    for given, expected in zip(inputs, outputs):  # noqa: B905 (LiveCodeBench zips)
        signal.alarm(timeout)
        with _CapturedStdout() as captured:
            try:
                _call_with_input(function, given)
            except Exception as err:
                signal.alarm(0)
                return _failure(_code_of(err), err, results)
            finally:
                signal.alarm(0)
        if not stdout_matches(captured.text, expected):
            return _failure(WRONG_ANSWER, None, results)
        results.append(True)
    return results, ""


# ----------------------------------------------------------------------------------------------
# Functional problems


def run_functional(
    code: str, inputs: list, outputs: list, fn_name: str, timeout: int
) -> tuple[list, str]:
    """(codes, error) for a LeetCode-style problem, as `run_stdio`."""
    solution = _compile(IMPORT_HEADER + "\n\n" + code, timeout)
    if not hasattr(solution, fn_name):
        raise LookupError(f"the solution has no {fn_name!r}")
    method = getattr(solution, fn_name)
    arguments = [[json.loads(line) for line in given.split("\n")] for given in inputs]
    expected_values = [json.loads(output) for output in outputs]
    results: list = []
    for args, expected in zip(arguments, expected_values):  # noqa: B905 (LiveCodeBench zips)
        signal.alarm(timeout)
        try:
            value = method(*args)
            signal.alarm(0)
            if isinstance(value, tuple):
                value = list(value)
            same = value == expected
            results.append(same)
            if not same:
                return results, ""
        except Exception as err:
            signal.alarm(0)
            return _failure(_code_of(err), err, results)
        finally:
            signal.alarm(0)
    return results, ""


# ----------------------------------------------------------------------------------------------
# The sandbox program


_DISABLED_OS_FUNCTIONS = (  # noqa: SIM905 (a word list reads better than 26 quoted names)
    "kill system putenv remove removedirs rmdir fchdir setuid fork forkpty killpg rename renames "
    "truncate replace unlink fchmod fchown chmod chown chroot lchflags lchmod lchown getcwd chdir"
).split()


def _disable_as_livecodebench() -> None:
    """What LiveCodeBench's `reliability_guard` does to the process before it runs a program."""
    import builtins
    import faulthandler
    import shutil
    import subprocess

    faulthandler.disable()
    builtins.quit = None
    builtins.help = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in _DISABLED_OS_FUNCTIONS:
        setattr(os, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, None)
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def _verdict_line(results: list | None, error: str) -> bytes:
    codes = None
    if results is not None:
        codes = [r if type(r) is int else bool(r) for r in results]  # comparisons: true/false
    return (VERDICT_PREFIX + json.dumps({"results": codes, "error": error[:300]}) + "\n").encode()


def main() -> None:
    """Grade the problem on stdin and write the verdict line (see the module docstring)."""
    problem = json.loads(sys.stdin.read())
    verdict_fd = os.dup(1)
    write, leave = os.write, os._exit  # kept: the guard does not touch them, the candidate may
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    sys.stdin.close()
    sys.stdin = open(os.devnull)  # noqa: SIM115 (the process's stdin from here on)
    sys.set_int_max_str_digits(50000)
    signal.signal(signal.SIGALRM, _on_alarm)
    _disable_as_livecodebench()
    code, inputs, outputs = problem["code"], problem["inputs"], problem["outputs"]
    fn_name, timeout = problem.get("fn_name"), int(problem["timeout"])
    try:
        try:
            if fn_name is None:
                results, error = run_stdio(code, inputs, outputs, timeout)
            else:
                results, error = run_functional(code, inputs, outputs, fn_name, timeout)
        except Exception as err:  # LiveCodeBench: the whole problem is one -4
            results, error = [RUNTIME_ERROR], f"error during testing: {err!r}"
        line = _verdict_line(results, error)
    except BaseException as err:  # SystemExit and the like end LiveCodeBench's worker process
        line = _verdict_line(None, f"the grading process ended: {err!r}")
    write(verdict_fd, line)
    leave(0)  # threads the program left running are not waited for
