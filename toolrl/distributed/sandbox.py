"""Sandbox workers as a Ray actor pool behind the `code_interpreter` tool.

A `SandboxWorker` actor owns one code interpreter (the local sandbox of its node, or the
server at `tools.sandbox_url`) and runs many calls at once (an async actor). `PooledTool`
is a Tool, like the interpreter it fronts, that sends each call to the next worker of the pool
in turn; rollout workers receive it (it pickles as a list of actor handles), so code runs on
whichever nodes the pool was placed, not beside the GPU that generated it.

A worker that dies makes its calls `infra_error` observations: the trainer masks those
trajectories instead of punishing the policy (the contract of `tools/base.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from toolrl.tools.base import ToolResult


class SandboxWorker:
    """One tool (by default the run's code interpreter) serving calls concurrently."""

    def __init__(self, make_tool: Callable[[], Any]):
        self.tool = make_tool()

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        return await self.tool.call(arguments)

    def describe(self) -> tuple[str, dict]:
        return self.tool.name, self.tool.schema


class PooledTool:
    """A Tool whose calls run on a pool of `SandboxWorker` actors, round robin."""

    def __init__(self, workers: list, name: str, schema: dict):
        if not workers:
            raise ValueError("a sandbox pool needs at least one worker")
        self.workers = list(workers)
        self.name = name
        self.schema = schema
        self._next = itertools.cycle(range(len(self.workers)))

    @classmethod
    def start(
        cls, make_tool: Callable[[], Any], size: int, *, max_concurrency: int = 64, **options
    ):
        """Start `size` workers (Ray actor `options`: num_cpus, resources, ...) and the tool."""
        import ray

        actor = ray.remote(SandboxWorker).options(max_concurrency=max_concurrency, **options)
        workers = [actor.remote(make_tool) for _ in range(size)]
        name, schema = ray.get(workers[0].describe.remote())
        return cls(workers, name, schema)

    def __getstate__(self) -> dict:
        return {"workers": self.workers, "name": self.name, "schema": self.schema}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["workers"], state["name"], state["schema"])

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        from ray.exceptions import RayActorError

        worker = self.workers[next(self._next)]
        try:
            return await worker.call.remote(arguments)
        except RayActorError as err:
            return ToolResult(f"Error: sandbox worker lost: {err}", "infra_error")
