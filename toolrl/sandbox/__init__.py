"""Run untrusted Python safely and fast: local isolated backends, limits, SandboxFusion-compatible
results, a SandboxFusion-compatible HTTP server and a client for remote servers.

    from toolrl.sandbox import Sandbox, Limits
    with Sandbox() as sandbox:
        result = sandbox.run_sync("print(sum(range(10)))", limits=Limits(timeout_s=5))

`Sandbox` (local, see `local.py`) and `RemoteSandbox` (a SandboxFusion or toolrl server, see
`client.py`) share one interface, `SandboxBackend`: `async run(code, stdin, limits, files,
fetch_files)`, `run_sync(...)`, `isolation`, `close()`; `build_sandbox(url=None, ...)` picks one.
Isolation levels are described in `isolation.py`, the process design in `zygote.py`.

Names are imported lazily so that `toolrl --help` does not pay for the sandbox's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Sandbox": "toolrl.sandbox.local",
    "DEFAULT_PRELOAD": "toolrl.sandbox.local",
    "RemoteSandbox": "toolrl.sandbox.client",
    "SandboxBackend": "toolrl.sandbox.backend",
    "build_sandbox": "toolrl.sandbox.factory",
    "Limits": "toolrl.sandbox.result",
    "RunResult": "toolrl.sandbox.result",
    "CommandResult": "toolrl.sandbox.result",
    "SandboxError": "toolrl.sandbox.result",
    "SandboxUnavailable": "toolrl.sandbox.result",
    "choose_level": "toolrl.sandbox.isolation",
    "describe": "toolrl.sandbox.isolation",
}
__all__ = [
    "DEFAULT_PRELOAD",
    "CommandResult",
    "Limits",
    "RemoteSandbox",
    "RunResult",
    "Sandbox",
    "SandboxBackend",
    "SandboxError",
    "SandboxUnavailable",
    "build_sandbox",
    "choose_level",
    "describe",
]

if TYPE_CHECKING:
    from toolrl.sandbox.backend import SandboxBackend
    from toolrl.sandbox.client import RemoteSandbox
    from toolrl.sandbox.factory import build_sandbox
    from toolrl.sandbox.isolation import choose_level, describe
    from toolrl.sandbox.local import DEFAULT_PRELOAD, Sandbox
    from toolrl.sandbox.result import (
        CommandResult,
        Limits,
        RunResult,
        SandboxError,
        SandboxUnavailable,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'toolrl.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
