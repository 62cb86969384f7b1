"""`build_sandbox`: the one place a sandbox backend is chosen (remote server or local)."""

from __future__ import annotations

from toolrl.sandbox.backend import SandboxBackend
from toolrl.sandbox.result import Limits


def build_sandbox(
    url: str | None = None,
    *,
    isolation: str = "auto",
    limits: Limits | None = None,
    max_concurrency: int | None = None,
    allow_weak_isolation: bool | None = None,
) -> SandboxBackend:
    """A remote backend if `url` is given (a SandboxFusion or `toolrl sandbox serve` server),
    else the local sandbox with the requested isolation level."""
    if url:
        from toolrl.sandbox.client import RemoteSandbox

        return RemoteSandbox(url, limits=limits, max_concurrency=max_concurrency)
    from toolrl.sandbox.local import Sandbox

    return Sandbox(
        isolation,
        limits=limits,
        max_concurrency=max_concurrency,
        allow_weak_isolation=allow_weak_isolation,
    )
