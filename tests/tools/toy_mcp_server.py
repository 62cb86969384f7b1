"""A toy MCP server for the tests, built on the SDK's own server class (FastMCP; `MCPServer`
since mcp 2). Run as `python toy_mcp_server.py`; speaks MCP over stdio."""

import os
import time

try:
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as Server

server = Server("toy")
counter = {"calls": 0}


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def count() -> int:
    """How many times `count` was called in this server process."""
    counter["calls"] += 1
    return counter["calls"]


@server.tool()
def crash() -> str:
    """Kill the server process mid-call."""
    os._exit(3)


@server.tool()
def hang(seconds: float) -> str:
    """Sleep (blocking the server) and then answer."""
    time.sleep(seconds)
    return "woke"


@server.tool()
def fail(message: str) -> str:
    """Raise an error inside the tool."""
    raise ValueError(message)


if __name__ == "__main__":
    server.run()
