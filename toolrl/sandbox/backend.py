"""The interface every sandbox backend satisfies, and the one builder configs go through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from toolrl.sandbox.result import Limits, RunResult


@runtime_checkable
class SandboxBackend(Protocol):
    """Runs a Python program and returns a SandboxFusion-shaped result.

    `run` never raises for what the program does: failures of the program are `Failed` results
    and failures of the sandbox itself are `SandboxError` results.
    """

    limits: Limits

    @property
    def isolation(self) -> str: ...

    async def run(
        self,
        code: str,
        stdin: str | bytes = "",
        limits: Limits | None = None,
        files: Mapping[str, bytes] | None = None,
        fetch_files: Sequence[str] = (),
    ) -> RunResult: ...

    def run_sync(
        self,
        code: str,
        stdin: str | bytes = "",
        limits: Limits | None = None,
        files: Mapping[str, bytes] | None = None,
        fetch_files: Sequence[str] = (),
    ) -> RunResult: ...

    def close(self) -> None: ...
