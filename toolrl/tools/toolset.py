"""The tools of a run, and the subset one trajectory is offered.

`ToolSet` holds the tools the recipe chose (`toolrl.tools.registry.build_tools`). A dataset row
may narrow and configure them with verl's `extra_info.tools_kwargs` shape:

    {"extra_info": {"tools_kwargs": {"search": {"create_kwargs": {"top_k": 5}}}}}

A row with `tools_kwargs` is offered exactly the tools it names (in the set's order); a row
without it is offered every tool. `create_kwargs` go to the tool's `open()` (a
`PerTrajectoryTool`); giving them to a tool that takes none is an error naming the row.

`TrajectoryTools` is what one trajectory calls: it opens per-trajectory sessions, guards every
call with `call_timeout` (an unanswered call is an `infra_error`, masked from training) and
turns a tool that raises into an `infra_error` observation, never an exception.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from toolrl.tools.base import PerTrajectoryTool, Tool, ToolResult, ToolSession
from toolrl.types import Sample

TOOLS_KWARGS = "tools_kwargs"


class ToolSet:
    """Named tools, in the order they are offered, and how to release them."""

    def __init__(
        self,
        tools: Iterable[Tool],
        *,
        call_timeout: float = 0.0,
        on_close: Iterable[Callable[[], None]] = (),
    ) -> None:
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"two tools are named `{tool.name}`: tool names must be unique")
            self.tools[tool.name] = tool
        self.call_timeout = call_timeout
        """Seconds one call may take before it is abandoned as infra_error; 0 = no limit."""
        self._on_close = list(on_close)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools.values())

    def __len__(self) -> int:
        return len(self.tools)

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema for tool in self.tools.values()]

    def offered(self, sample: Sample) -> dict[str, dict[str, Any]]:
        """Tool name → create_kwargs for the tools `sample` is offered (see the module
        docstring); ValueError naming the sample and key when its `tools_kwargs` is malformed."""
        spec = sample.extra_info.get(TOOLS_KWARGS) if sample.extra_info else None
        if spec is None:
            return {name: {} for name in self.tools}
        where = f"sample {sample.id}: extra_info.{TOOLS_KWARGS}"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a mapping of tool name -> {{create_kwargs: ...}}")
        unknown = [name for name in spec if name not in self.tools]
        if unknown:
            raise ValueError(
                f"{where} names tool `{unknown[0]}`, which this run does not have "
                f"(tools: {', '.join(self.tools) or 'none'}; choose them with tools.enabled)"
            )
        offered = {}
        for name in self.tools:
            if name not in spec:
                continue
            entry = spec[name] or {}
            kwargs = entry.get("create_kwargs") or {} if isinstance(entry, dict) else None
            if not isinstance(kwargs, dict):
                raise ValueError(f"{where}.{name} must be a mapping with `create_kwargs`")
            tool = self.tools[name]
            if kwargs and not isinstance(tool, PerTrajectoryTool):
                raise ValueError(f"{where}.{name}.create_kwargs: tool `{name}` takes no kwargs")
            if kwargs:
                try:
                    inspect.signature(tool.open).bind(**kwargs)
                except TypeError as err:
                    raise ValueError(f"{where}.{name}.create_kwargs: {err}") from err
            offered[name] = kwargs
        return offered

    def schemas_for(self, sample: Sample) -> list[dict[str, Any]]:
        """The schemas rendered into `sample`'s prompt."""
        return [self.tools[name].schema for name in self.offered(sample)]

    def open(self, sample: Sample) -> TrajectoryTools:
        """The tools of one trajectory of `sample` (sessions opened now, closed by `close()`)."""
        bound: dict[str, Tool | ToolSession] = {}
        sessions: list[ToolSession] = []
        for name, kwargs in self.offered(sample).items():
            tool = self.tools[name]
            if isinstance(tool, PerTrajectoryTool):
                sessions.append(tool.open(**kwargs))
                bound[name] = sessions[-1]
            else:
                bound[name] = tool
        return TrajectoryTools(bound, self.call_timeout, sessions)

    def close(self) -> None:
        """Release the tools' processes and servers (sandboxes, MCP servers)."""
        for close in self._on_close:
            close()
        self._on_close.clear()


def as_toolset(tools: ToolSet | Iterable[Tool]) -> ToolSet:
    """A ToolSet as given, or one around a plain list of tools (tests, custom callers)."""
    return tools if isinstance(tools, ToolSet) else ToolSet(tools)


class TrajectoryTools:
    """The tools one trajectory calls; never raises from `call`."""

    def __init__(
        self,
        tools: dict[str, Tool | ToolSession],
        call_timeout: float = 0.0,
        sessions: list[ToolSession] | None = None,
    ) -> None:
        self.tools = tools
        self.call_timeout = call_timeout
        self.sessions = sessions or []

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema for tool in self.tools.values()]

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call tool `name`; an unknown name is the model's error, a hang or a raise the
        infrastructure's."""
        started = time.perf_counter()
        tool = self.tools.get(name)
        if tool is None:
            text = f"Error: no tool named `{name}` (tools: {', '.join(self.tools) or 'none'})."
            return ToolResult(text, "error")
        try:
            return await asyncio.wait_for(tool.call(arguments), self.call_timeout or None)
        except TimeoutError:
            text = f"Error: tool `{name}` did not answer within {self.call_timeout:g}s."
            return ToolResult(text, "infra_error", time.perf_counter() - started)
        except Exception as err:  # a tool that raises is an infrastructure fault, not the model's
            text = f"Error: tool `{name}` failed: {err}"
            return ToolResult(text, "infra_error", time.perf_counter() - started)

    async def close(self) -> None:
        """End every session this trajectory opened."""
        await asyncio.gather(*(s.close() for s in self.sessions), return_exceptions=True)
