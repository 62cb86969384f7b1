"""Limits and results of sandboxed runs, in SandboxFusion's shape.

A `RunResult` serialises (`to_dict`) exactly like SandboxFusion's `RunCodeResponse`: overall
`status` Success | Failed | SandboxError, `message`, `compile_result` (always None for Python),
`run_result` {status: Finished | TimeLimitExceeded | Error, execution_time, return_code, stdout,
stderr}, `files` (base64) and `executor_pod_name`, plus two fields of ours that SandboxFusion
clients ignore: `isolation` (the level the run had) and `run_result.limit_exceeded`.

As in SandboxFusion, run status `Error` means the sandbox could not run the program and makes
the overall status `SandboxError`; a program killed for memory or for too much output is
`Finished` with a non-zero return code (so the overall status is `Failed` and a trainer punishes
it rather than masking it), and `limit_exceeded` says which limit it hit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RunStatus = Literal["Success", "Failed", "SandboxError"]
CommandStatus = Literal["Finished", "TimeLimitExceeded", "Error"]
LimitName = Literal["time", "cpu_time", "memory", "output", "file_size"]


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): the result is not the program's fault."""


class SandboxUnavailable(SandboxError):
    """No acceptable isolation level exists on this machine (the message says how to fix it)."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Every run gets all of them; the defaults suit a code-interpreter call."""

    timeout_s: float = 10.0  # wall clock, from the first line of user code
    memory_mb: int = 1024  # address space growth, and the cgroup's memory where available
    max_processes: int = 64  # processes and threads together
    max_output_bytes: int = 1 << 20  # per stream; the run is killed when exceeded
    max_file_mb: int = 64  # largest file a run may write
    max_open_files: int = 256
    cpu_time_s: float | None = None  # default: the wall-clock timeout plus one second

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_processes", "max_output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0 or math.isinf(value):
                raise ValueError(f"Limits.{name} must be a positive finite number, got {value!r}")
        for name in ("max_file_mb", "max_open_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_open_files < 16:
            raise ValueError("Limits.max_open_files must be at least 16 (Python needs a few)")

    @property
    def cpu_seconds(self) -> int:
        """The RLIMIT_CPU soft limit in whole seconds."""
        return math.ceil(self.cpu_time_s if self.cpu_time_s else self.timeout_s + 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (crosses process boundaries as JSON)."""
        return asdict(self)


@dataclass
class CommandResult:
    """SandboxFusion's CommandRunResult plus `limit_exceeded` and the run's CPU time."""

    status: CommandStatus
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    limit_exceeded: LimitName | None = None
    cpu_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object SandboxFusion clients expect (extra keys are ignored by them)."""
        return asdict(self)


@dataclass
class RunResult:
    """The outcome of one run; `to_dict()` is a SandboxFusion RunCodeResponse."""

    status: RunStatus
    run_result: CommandResult | None = None
    message: str = ""
    files: dict[str, str] = field(default_factory=dict)
    isolation: str = ""

    @property
    def ok(self) -> bool:
        """True when the program ran to completion and exited with status 0."""
        return self.status == "Success"

    @property
    def stdout(self) -> str:
        return self.run_result.stdout if self.run_result else ""

    @property
    def stderr(self) -> str:
        return self.run_result.stderr if self.run_result else ""

    @classmethod
    def sandbox_error(cls, message: str, isolation: str = "") -> RunResult:
        """A result for a run the sandbox failed to carry out."""
        return cls(
            status="SandboxError",
            run_result=CommandResult(status="Error", stderr=message),
            message=message,
            isolation=isolation,
        )

    def to_dict(self) -> dict[str, Any]:
        """SandboxFusion's RunCodeResponse, plus `isolation`."""
        return {
            "status": self.status,
            "message": self.message,
            "compile_result": None,
            "run_result": self.run_result.to_dict() if self.run_result else None,
            "executor_pod_name": None,
            "files": dict(self.files),
            "isolation": self.isolation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], isolation: str = "") -> RunResult:
        """Parse a SandboxFusion (or toolrl server) response; raises ValueError if malformed."""
        status = data.get("status")
        if status not in ("Success", "Failed", "SandboxError"):
            raise ValueError(f"sandbox response has an unknown status {status!r}")
        run = data.get("run_result")
        command = None
        if isinstance(run, dict):
            run_status = run.get("status")
            if run_status not in ("Finished", "TimeLimitExceeded", "Error"):
                raise ValueError(f"sandbox response has an unknown run status {run_status!r}")
            command = CommandResult(
                status=run_status,
                execution_time=run.get("execution_time"),
                return_code=run.get("return_code"),
                stdout=run.get("stdout") or "",
                stderr=run.get("stderr") or "",
                limit_exceeded=run.get("limit_exceeded"),
                cpu_time=run.get("cpu_time"),
            )
        return cls(
            status=status,
            run_result=command,
            message=str(data.get("message") or ""),
            files=dict(data.get("files") or {}),
            isolation=str(data.get("isolation") or isolation),
        )
