"""Tools the model can call: the `Tool` protocol and the `code_interpreter` tool.

A new tool is one module with a class satisfying `Tool`; the agent loop takes any list of them.
"""

from __future__ import annotations

from toolrl.tools.base import Tool, ToolResult, ToolStatus, function_schema
from toolrl.tools.code_interpreter import CodeInterpreter

__all__ = ["CodeInterpreter", "Tool", "ToolResult", "ToolStatus", "function_schema"]
