"""The `python_session` tool: Python whose variables persist across one trajectory's calls.

Every call runs in the same sandbox as `code_interpreter` (same isolation level and limits,
local or remote), in a fresh sandboxed process: untrusted code never runs in toolrl's process,
and nothing is shared between trajectories. What persists is carried *between* those
processes by the trajectory's session, as opaque bytes toolrl never unpickles:

- the values of the cell's global variables, pickled inside the sandbox at the end of each call
  (written to `state.pkl` in the run directory, fetched, and given to the next call);
- the source of the top-level `import`, `def` and `class` statements of earlier cells, run again
  before the next cell (functions, classes and modules cannot be pickled by value).

How this departs from a live interpreter process (the design the issue asked for; the sandbox
runs one process per program, and that process has no channel for further input): a value
that cannot be pickled (an open file, a generator, a lock) is dropped, and the observation
says which names were; re-run definitions see the session's variables, not their values at
the time of definition; a session unused for `tools.session_idle_timeout` seconds forgets its
state, and the next call says so. The session ends (its state dropped) with the trajectory.
"""

from __future__ import annotations

import ast
import base64
import time
from typing import Any

from toolrl.sandbox.backend import SandboxBackend
from toolrl.sandbox.result import Limits
from toolrl.tools.base import ToolResult, function_schema
from toolrl.tools.code_interpreter import (
    add_notebook_print,
    extract_code,
    format_observation,
    middle_truncate,
    tool_sandbox,
)

NAME = "python_session"
SCHEMA = function_schema(
    NAME,
    "Run Python in a notebook-like session: variables, functions and imports from earlier "
    "calls are kept. Prints stdout and stderr, and the value of a last expression.",
    {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python code to run"}},
        "required": ["code"],
    },
)
STATE_FILE = "state.pkl"

# Runs inside the sandbox: restore, run the cell, save. Its own names start with __toolrl.
_RUNNER = """
import pickle as __toolrl_pickle, sys as __toolrl_sys, types as __toolrl_types
__toolrl_skip = (__toolrl_types.ModuleType, __toolrl_types.FunctionType, type,
                 __toolrl_types.BuiltinFunctionType)
exec(compile({definitions!r}, "<session>", "exec"))
try:
    with open({state!r}, "rb") as __toolrl_f:
        globals().update(__toolrl_pickle.load(__toolrl_f))
except FileNotFoundError:
    pass
def __toolrl_save():
    kept, dropped = {{}}, []
    for name, value in list(globals().items()):
        if name.startswith("__") or isinstance(value, __toolrl_skip):
            continue
        try:
            __toolrl_pickle.dumps(value)
            kept[name] = value
        except Exception:
            dropped.append(name)
    with open({state!r}, "wb") as f:
        __toolrl_pickle.dump(kept, f)
    if dropped:
        print("[session] not kept (cannot be saved): " + ", ".join(sorted(dropped)),
              file=__toolrl_sys.stderr)
try:
    exec(compile({cell!r}, "<cell>", "exec"))
except BaseException as __toolrl_err:
    import traceback as __toolrl_tb
    __toolrl_tb.print_exception(type(__toolrl_err), __toolrl_err, __toolrl_err.__traceback__.tb_next)
    __toolrl_save()
    __toolrl_sys.exit(1)
__toolrl_save()
"""


def definitions_of(cell: str) -> dict[str, str]:
    """Name → source of the top-level imports, functions and classes of `cell` (none if it does
    not parse); an import binds each of its names, and each name maps to its statement."""
    try:
        tree = ast.parse(cell)
    except (SyntaxError, ValueError):
        return {}
    found: dict[str, str] = {}
    for node in tree.body:
        source = ast.get_source_segment(cell, node)
        if source is None:
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = source
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                found[name] = source
    return found


class PythonSession:
    """The `python_session` tool over a sandbox backend; `open()` starts one trajectory's session."""

    name = NAME

    def __init__(
        self,
        sandbox: SandboxBackend,
        *,
        max_output_chars: int = 256,
        limits: Limits | None = None,
        idle_timeout: float = 300.0,
        owns_sandbox: bool = True,
    ) -> None:
        self.sandbox, self.limits = sandbox, limits
        self.max_output_chars, self.idle_timeout = max_output_chars, idle_timeout
        self._owns_sandbox = owns_sandbox

    @classmethod
    def from_config(cls, cfg, sandbox: SandboxBackend | None = None) -> PythonSession:
        """The tool as a `ToolsConfig` describes it: the code interpreter's sandbox and limits
        (`sandbox`: one already built so, shared with the code interpreter and not closed here)."""
        owns = sandbox is None
        sandbox, limits = tool_sandbox(cfg, sandbox)
        return cls(
            sandbox,
            max_output_chars=cfg.output_max_chars,
            limits=limits,
            idle_timeout=cfg.session_idle_timeout,
            owns_sandbox=owns,
        )

    @property
    def schema(self) -> dict[str, Any]:
        return SCHEMA

    def open(self) -> Session:
        return Session(self)

    def close(self) -> None:
        if self._owns_sandbox:
            self.sandbox.close()


class Session:
    """One trajectory's session: the saved variables and definitions of its earlier calls."""

    name = NAME
    schema = SCHEMA

    def __init__(self, tool: PythonSession) -> None:
        self.tool = tool
        self.state: bytes | None = None
        self.definitions: dict[str, str] = {}
        self.last_used = time.monotonic()

    def program(self, cell: str) -> str:
        """The sandboxed program of one call (restore, run `cell`, save)."""
        definitions = "\n".join(dict.fromkeys(self.definitions.values()))
        return _RUNNER.format(definitions=definitions, state=STATE_FILE, cell=cell)

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        started = time.perf_counter()
        code = arguments.get("code") if isinstance(arguments, dict) else None
        if not isinstance(code, str):
            text = f"Error: {NAME} needs one string argument, `code`."
            return ToolResult(text, "error", time.perf_counter() - started)
        note = ""
        if self.state is not None and time.monotonic() - self.last_used > self.tool.idle_timeout:
            self.state, self.definitions = None, {}
            note = "[session] idle too long: earlier variables were cleared.\n"
        self.last_used = time.monotonic()
        cell = add_notebook_print(extract_code(code))
        files = {STATE_FILE: self.state} if self.state is not None else None
        result = await self.tool.sandbox.run(
            self.program(cell), limits=self.tool.limits, files=files, fetch_files=[STATE_FILE]
        )
        if result.status == "SandboxError":
            status = "infra_error"
        else:
            status = "success" if result.status == "Success" else "error"
            saved = result.files.get(STATE_FILE)
            if saved is not None:
                self.state = base64.b64decode(saved)
            self.definitions.update(definitions_of(cell))
        full = note + format_observation(result)
        text = middle_truncate(full, self.tool.max_output_chars)
        info = {"state_bytes": len(self.state or b""), "truncated": len(text) < len(full)}
        return ToolResult(text, status, time.perf_counter() - started, info)

    async def close(self) -> None:
        self.state, self.definitions = None, {}
