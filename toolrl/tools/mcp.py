"""Tools of MCP servers (Model Context Protocol), started over stdio with the official `mcp` SDK.

    tools:
      mcp_servers: {calc: [python, calc_server.py]}

Each server in `tools.mcp_servers` is started when the tools are built; every tool it lists is
offered to the model under its own name, with the schema the server declares, and calls are
routed to it. A server's client session lives on a private event-loop thread (the SDK's
transport must be entered and left on one task, while the agent loop makes a new event loop
for every rollout), and calls from any loop are handed to it.

Failures: a server that dies (its call raises, or the session has ended) or hangs (no answer
within `tools.mcp_timeout`) gives an `infra_error` observation, which the trainer masks; the
server is then restarted, so later calls reach a fresh process. A result the server marks
`isError` is the model's error (status `error`), like an exception in the code interpreter.
Observations are middle-truncated to `tools.output_max_chars`.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from concurrent.futures import Future
from typing import Any

from toolrl.tools.base import ToolResult, function_schema
from toolrl.tools.code_interpreter import middle_truncate


class McpServer:
    """One MCP server process and its client session, restarted when it fails."""

    def __init__(self, name: str, command: list[str], *, timeout: float = 30.0) -> None:
        self.name, self.command, self.timeout = name, command, timeout
        self.restarts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"toolrl-mcp-{name}", daemon=True
        )
        self._thread.start()
        self._session: Any = None
        self._task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._restarting: set[asyncio.Task] = set()
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (open while the server runs)
            "w", prefix=f"toolrl-mcp-{name}-", suffix=".log", delete=False
        )
        self.log_path = self._log.name
        """The server's stderr (its own logs and tracebacks)."""

    def start(self) -> list[dict[str, Any]]:
        """Start the server and list its tools (name, description, inputSchema); raises
        RuntimeError naming the server when it cannot be started or listed."""
        return self._submit(self._connect()).result(self.timeout + 5)

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """Call `tool` from any event loop (see the module docstring for failures)."""
        return await asyncio.wrap_future(self._submit(self._call(tool, arguments)))

    def close(self) -> None:
        """Stop the server and the private loop."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):  # closing must not fail: the process goes anyway
            self._submit(self._disconnect()).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
        self._log.close()

    # -- on the private loop --------------------------------------------------------------

    def _submit(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _connect(self) -> list[dict[str, Any]]:
        ready: asyncio.Future = self._loop.create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._serve(ready, self._stop))
        try:
            return await asyncio.wait_for(ready, self.timeout)
        except Exception as err:
            await self._disconnect()
            reason = "did not start in time" if isinstance(err, TimeoutError) else repr(err)
            raise RuntimeError(
                f"MCP server `{self.name}` ({' '.join(self.command)}): {reason} "
                f"(its stderr: {self.log_path})"
            ) from err

    async def _serve(self, ready: asyncio.Future, stop: asyncio.Event) -> None:
        from mcp import ClientSession, StdioServerParameters, stdio_client

        params = StdioServerParameters(command=self.command[0], args=list(self.command[1:]))
        try:
            transport = stdio_client(params, errlog=self._log)
            async with transport as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                self._session = session
                ready.set_result([t.model_dump(mode="json", by_alias=True) for t in listed.tools])
                await stop.wait()
        except BaseException as err:
            if not ready.done():
                ready.set_exception(err if isinstance(err, Exception) else RuntimeError(err))
            if not isinstance(err, Exception):
                raise
        finally:
            self._session = None

    async def _disconnect(self) -> None:
        task, self._task, self._session = self._task, None, None
        if task is None:
            return
        if self._stop is not None:
            self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except Exception:  # a hung transport: cancel it (the SDK kills the process)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _alive(self) -> bool:
        return self._session is not None and self._task is not None and not self._task.done()

    async def _restart(self, failed: Any = None) -> None:
        """Restart the server if it is dead, or if `failed` is still its session: calls that
        fail together, and calls that find it dead, restart it once."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._alive() and (failed is None or self._session is not failed):
                return
            self.restarts += 1
            await self._disconnect()
            with contextlib.suppress(RuntimeError):  # the next call tries again, and says so
                await self._connect()

    async def _call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        started = time.perf_counter()
        if not self._alive():
            await self._restart()
        session = self._session
        if session is None:
            text = f"Error: MCP server `{self.name}` is unavailable (it could not be restarted)."
            return ToolResult(text, "infra_error", time.perf_counter() - started)
        try:
            result = await asyncio.wait_for(session.call_tool(tool, arguments), self.timeout)
        except Exception as err:
            restart = asyncio.create_task(self._restart(failed=session))
            self._restarting.add(restart)
            restart.add_done_callback(self._restarting.discard)
            why = (
                f"did not answer within {self.timeout:g}s"
                if isinstance(err, TimeoutError)
                else f"failed ({type(err).__name__}: {err})"
            )
            text = f"Error: MCP server `{self.name}` {why}; it is being restarted."
            return ToolResult(text, "infra_error", time.perf_counter() - started)
        data = result.model_dump(mode="json", by_alias=True)
        text = "\n".join(_content_text(block) for block in data.get("content") or [])
        status = "error" if data.get("isError") else "success"
        return ToolResult(text or "(no output)", status, time.perf_counter() - started)


def _content_text(block: dict[str, Any]) -> str:
    """A content block as text: its text, or a note of what kind of content it was."""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    return f"[{block.get('type', 'unknown')} content]"


class McpTool:
    """One tool of an MCP server, offered under the server's name for it."""

    def __init__(self, server: McpServer, listed: dict[str, Any], max_chars: int) -> None:
        self.server, self.name, self.max_chars = server, listed["name"], max_chars
        parameters = listed.get("inputSchema") or {"type": "object", "properties": {}}
        self._schema = function_schema(self.name, listed.get("description") or "", parameters)

    @property
    def schema(self) -> dict[str, Any]:
        return self._schema

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        if not isinstance(arguments, dict):
            return ToolResult(f"Error: {self.name} takes a JSON object of arguments.", "error")
        result = await self.server.call(self.name, arguments)
        result.text = middle_truncate(result.text, self.max_chars)
        return result


def start_mcp_tools(
    servers: dict[str, list[str]], *, timeout: float = 30.0, max_chars: int = 256
) -> tuple[list[McpTool], Any]:
    """Start every server, and return their tools and a function that stops them all.

    ConfigError naming `tools.mcp_servers.<name>` when a server cannot be started."""
    from toolrl.config import ConfigError

    started: list[McpServer] = []

    def close() -> None:
        for server in started:
            server.close()

    tools: list[McpTool] = []
    for name, command in servers.items():
        server = McpServer(name, command, timeout=timeout)
        started.append(server)
        try:
            listed = server.start()
        except RuntimeError as err:
            close()
            raise ConfigError(f"tools.mcp_servers.{name}: {err}") from err
        tools += [McpTool(server, entry, max_chars) for entry in listed]
    return tools, close
