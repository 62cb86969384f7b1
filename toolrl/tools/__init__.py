"""Tools the model can call: the `Tool` protocol and the `code_interpreter` tool.

A new tool is one module with a class satisfying `Tool` and one line in `TOOLS`.
"""

from __future__ import annotations

from toolrl.tools.base import Tool, ToolResult, ToolStatus, function_schema
from toolrl.tools.code_interpreter import CodeInterpreter

# name -> constructor; constructors take the tool's dependencies (e.g. a sandbox) as arguments.
TOOLS = {"code_interpreter": CodeInterpreter}

__all__ = ["TOOLS", "CodeInterpreter", "Tool", "ToolResult", "ToolStatus", "function_schema"]
