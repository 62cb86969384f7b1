"""The one factory of a run's tools: `build_tools(config.tools)`, used by every command.

`TOOLS` maps a name a recipe may list in `tools.enabled` to a builder taking the `ToolsConfig`
and what the call's tools share (one sandbox), and returning the tool. Every tool of every server in `tools.mcp_servers`
is offered too. A new built-in tool is one module, one line here and its name in
`toolrl.config.schema.TOOL_NAMES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolrl.tools.base import Tool
from toolrl.tools.toolset import ToolSet


class Shared:
    """What the tools of one `build_tools` call share: one sandbox for every tool running code
    (built on first use, closed with the ToolSet)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self._sandbox = None
        self.closers: list[Callable[[], None]] = []

    def sandbox(self):
        if self._sandbox is None:
            from toolrl.sandbox.factory import build_sandbox
            from toolrl.sandbox.result import Limits

            cfg = self.cfg
            self._sandbox = build_sandbox(
                cfg.sandbox_url or None,
                limits=Limits(timeout_s=cfg.timeout, memory_mb=cfg.memory_mb),
                max_concurrency=cfg.max_concurrent,
            )
            self.closers.append(self._sandbox.close)
        return self._sandbox


def _code_interpreter(cfg, shared: Shared) -> Tool:
    from toolrl.tools.code_interpreter import CodeInterpreter

    return CodeInterpreter.from_config(cfg, sandbox=shared.sandbox())


def _search(cfg, shared: Shared) -> Tool:
    from toolrl.tools.search import Search

    return Search.from_config(cfg)


def _python_session(cfg, shared: Shared) -> Tool:
    from toolrl.tools.python_session import PythonSession

    return PythonSession.from_config(cfg, sandbox=shared.sandbox())


TOOLS: dict[str, Callable[[Any, Shared], Tool]] = {
    "code_interpreter": _code_interpreter,
    "search": _search,
    "python_session": _python_session,
}
"""Built-in tools by the name `tools.enabled` lists (the names `config.schema.TOOL_NAMES`
declares, so that a recipe naming another fails when it is loaded)."""


def build_tools(cfg) -> ToolSet:
    """The tools a `ToolsConfig` chooses, in `tools.enabled` order, then the MCP servers'."""
    tools, shared = [], Shared(cfg)
    try:
        tools = [TOOLS[name](cfg, shared) for name in cfg.enabled]
        if cfg.mcp_servers:
            from toolrl.tools.mcp import start_mcp_tools

            mcp_tools, close = start_mcp_tools(
                cfg.mcp_servers, timeout=cfg.mcp_timeout, max_chars=cfg.output_max_chars
            )
            tools += mcp_tools
            shared.closers.append(close)
        return ToolSet(tools, call_timeout=cfg.call_timeout, on_close=shared.closers)
    except BaseException:
        for close in shared.closers:
            close()
        raise
