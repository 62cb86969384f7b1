"""The Tool protocol the agent loop calls, and the result every tool returns.

A tool has a `name`, an OpenAI function `schema` and `async call(arguments) -> ToolResult`.
`ToolResult.status` tells the trainer how to treat the call:

- "success": the tool did what was asked (for code: the program ran and exited 0);
- "error": the call failed because of what the model asked (bad arguments, an exception, a
  timeout, a memory or output limit) — the text is an observation the model learns from;
- "infra_error": the tool's infrastructure failed (e.g. a SandboxError) — not the model's
  fault, so the trainer masks the trajectory instead of punishing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

ToolStatus = Literal["success", "error", "infra_error"]


@dataclass
class ToolResult:
    """What a tool call returns: the observation text, its status, timing and details."""

    text: str
    status: ToolStatus
    elapsed_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Tool(Protocol):
    """A tool the model can call by name with JSON arguments."""

    name: str

    @property
    def schema(self) -> dict[str, Any]: ...

    async def call(self, arguments: dict[str, Any]) -> ToolResult: ...


@runtime_checkable
class ToolSession(Protocol):
    """A tool bound to one trajectory: called like a `Tool`, closed when the trajectory ends."""

    name: str

    @property
    def schema(self) -> dict[str, Any]: ...

    async def call(self, arguments: dict[str, Any]) -> ToolResult: ...

    async def close(self) -> None: ...


@runtime_checkable
class PerTrajectoryTool(Protocol):
    """A tool that gives each trajectory its own session (state, or a row's `create_kwargs`)."""

    name: str

    @property
    def schema(self) -> dict[str, Any]: ...

    def open(self, **create_kwargs: Any) -> ToolSession:
        """A fresh session; `create_kwargs` come from the dataset row (`extra_info.tools_kwargs
        .<name>.create_kwargs`); an unknown one raises ValueError naming it."""
        ...

    def close(self) -> None:
        """Release what the tool holds across trajectories (processes, servers)."""
        ...


def function_schema(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function-calling schema: {"type": "function", "function": {...}}."""
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }
