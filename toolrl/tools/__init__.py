"""Tools the model can call: the `Tool` contract, the registry that builds a run's tools, and
the built-in tools (`code_interpreter`, `python_session`, `search`; MCP servers' tools).

A new tool is one module with a class satisfying `Tool` (or `PerTrajectoryTool`, for per-
trajectory state) and one line in `toolrl.tools.registry.TOOLS`; every command builds its tools
with `build_tools(config.tools)`.
"""

from __future__ import annotations

from toolrl.tools.base import (
    PerTrajectoryTool,
    Tool,
    ToolResult,
    ToolSession,
    ToolStatus,
    function_schema,
)
from toolrl.tools.code_interpreter import CodeInterpreter
from toolrl.tools.toolset import ToolSet, TrajectoryTools

__all__ = [
    "CodeInterpreter",
    "PerTrajectoryTool",
    "Tool",
    "ToolResult",
    "ToolSession",
    "ToolSet",
    "ToolStatus",
    "TrajectoryTools",
    "function_schema",
]
