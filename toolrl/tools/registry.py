"""The one factory of a run's tools: `build_tools(config.tools)`, used by every command.

`TOOLS` maps a name a recipe may list in `tools.enabled` to a builder taking the `ToolsConfig`
and returning the tool and what releases it. Every tool of every server in `tools.mcp_servers`
is offered too. A new built-in tool is one module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from toolrl.tools.base import Tool
from toolrl.tools.toolset import ToolSet

Built = tuple[Tool, Callable[[], None]]


def _code_interpreter(cfg) -> Built:
    from toolrl.tools.code_interpreter import CodeInterpreter

    tool = CodeInterpreter.from_config(cfg)
    return tool, tool.sandbox.close


def _search(cfg) -> Built:
    from toolrl.tools.search import Search

    return Search.from_config(cfg), lambda: None


def _python_session(cfg) -> Built:
    from toolrl.tools.python_session import PythonSession

    tool = PythonSession.from_config(cfg)
    return tool, tool.close


TOOLS: dict[str, Callable[..., Built]] = {
    "code_interpreter": _code_interpreter,
    "search": _search,
    "python_session": _python_session,
}
"""Built-in tools by the name `tools.enabled` lists."""


def build_tools(cfg) -> ToolSet:
    """The tools a `ToolsConfig` chooses, in `tools.enabled` order, then the MCP servers'."""
    tools, closers = [], []
    try:
        for name in cfg.enabled:
            tool, close = TOOLS[name](cfg)
            tools.append(tool)
            closers.append(close)
        if cfg.mcp_servers:
            from toolrl.tools.mcp import start_mcp_tools

            mcp_tools, close = start_mcp_tools(
                cfg.mcp_servers, timeout=cfg.mcp_timeout, max_chars=cfg.output_max_chars
            )
            tools += mcp_tools
            closers.append(close)
        return ToolSet(tools, call_timeout=cfg.call_timeout, on_close=closers)
    except BaseException:
        for close in closers:
            close()
        raise
