"""`RemoteSandbox`: the sandbox interface backed by a SandboxFusion (or `toolrl sandbox serve`)
server over HTTP (httpx, one pooled client: at most `max_concurrency` connections, kept alive
between runs), with timeouts and bounded retries.

Retried (with exponential backoff): connection failures, timeouts, HTTP 429 and 5xx, and bodies
that are not a valid response. Not retried: a well-formed response, whatever its status (a
program's failure is an answer, and a `SandboxError` the server chose to report is passed on).
When every attempt fails, the result is a `SandboxError` saying why, so a trainer can mask it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from toolrl.sandbox.backend import SandboxBackend
from toolrl.sandbox.result import Limits, RunResult

__all__ = ["RemoteSandbox", "SandboxBackend"]
_RETRIABLE_HTTP = {429, 500, 502, 503, 504}


def endpoint(url: str) -> str:
    """`http://host:port` or `.../run_code` -> the `/run_code` URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"sandbox URL must look like http://host:port[/run_code], got {url!r}")
    if parsed.path in ("", "/"):
        return url.rstrip("/") + "/run_code"
    return url


class RemoteSandbox:
    """Sends runs to a SandboxFusion-compatible server (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        limits: Limits | None = None,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        request_margin_s: float = 10.0,
        max_concurrency: int | None = None,
    ) -> None:
        self.url = endpoint(url)
        self.limits = limits or Limits()
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.request_margin_s = request_margin_s
        self.max_concurrency = max_concurrency or 32
        self._executor = ThreadPoolExecutor(
            self.max_concurrency, thread_name_prefix="sandbox-client"
        )
        pool = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        self._http = httpx.Client(limits=pool, headers={"Accept": "application/json"})

    @property
    def isolation(self) -> str:
        return f"remote:{self.url}"

    def payload(self, code: str, stdin: str | bytes, limits: Limits, files, fetch_files) -> dict:
        """The RunCodeRequest body, shaped like the one verl's client sends."""
        if isinstance(stdin, bytes):
            stdin = stdin.decode("utf-8", "surrogateescape")
        return {
            "compile_timeout": limits.timeout_s,
            "run_timeout": limits.timeout_s,
            "code": code,
            "stdin": stdin,
            "memory_limit_MB": limits.memory_mb,
            "language": "python",
            "files": {k: base64.b64encode(v).decode() for k, v in (files or {}).items()},
            "fetch_files": list(fetch_files),
        }

    def run_sync(
        self,
        code: str,
        stdin: str | bytes = "",
        limits: Limits | None = None,
        files: Mapping[str, bytes] | None = None,
        fetch_files: Sequence[str] = (),
    ) -> RunResult:
        """POST the run, retrying transport failures; never raises for them."""
        limits = limits or self.limits
        body = json.dumps(self.payload(code, stdin, limits, files, fetch_files)).encode()
        timeout = 2 * limits.timeout_s + self.request_margin_s
        errors = []
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return RunResult.from_dict(self._post(body, timeout), self.isolation)
            except _Retriable as exc:
                errors.append(str(exc))
        attempts = self.max_retries + 1
        return RunResult.sandbox_error(
            f"remote sandbox {self.url} failed {attempts} times; last error: {errors[-1]}",
            self.isolation,
        )

    def _post(self, body: bytes, timeout: float) -> dict:
        headers = {"Content-Type": "application/json"}
        try:
            response = self._http.post(self.url, content=body, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:  # refused, reset, timed out, a broken answer
            raise _Retriable(f"{type(exc).__name__}: {exc or 'no answer'}") from exc
        if response.status_code >= 400:
            detail = response.content[:300].decode(errors="replace")
            if response.status_code in _RETRIABLE_HTTP:
                raise _Retriable(f"HTTP {response.status_code}: {detail}")
            return _http_error_result(response.status_code, detail)
        try:
            data = json.loads(response.content)
            RunResult.from_dict(data)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise _Retriable(f"invalid response body: {exc}") from exc
        return data

    async def run(
        self,
        code: str,
        stdin: str | bytes = "",
        limits: Limits | None = None,
        files: Mapping[str, bytes] | None = None,
        fetch_files: Sequence[str] = (),
    ) -> RunResult:
        """`run_sync` on the backend's own thread pool: at most `max_concurrency` at a time,
        from any event loop (the trainer runs one loop per step)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self.run_sync, code, stdin, limits, files, fetch_files
        )

    def close(self) -> None:
        """Stop the thread pool and close the pooled connections."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._http.close()


class _Retriable(Exception):
    pass


def _http_error_result(code: int, detail: str) -> dict:
    """A non-retriable HTTP error (e.g. 422, a malformed request) as a SandboxError result."""
    message = f"HTTP {code}: {detail}"
    return RunResult.sandbox_error(message).to_dict()
