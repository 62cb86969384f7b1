"""An HTTP server with SandboxFusion's `POST /run_code` contract, backed by the local sandbox.

Existing SandboxFusion clients (verl's `sandbox_fusion` reward and tool, among others) can point
at `toolrl sandbox serve` unchanged. Request fields: `code` (required), `language` ("python";
others are answered with a SandboxError result), `stdin`, `run_timeout` (seconds),
`compile_timeout` (accepted, unused: Python has no compile step here), `memory_limit_MB` (-1 or
absent: the server's default), `files` (name -> base64, written into the run directory),
`fetch_files` (names whose content comes back base64 in `files`). The response is a
RunCodeResponse (see `result.py`). `GET /v1/ping` answers "pong".

Standard library only: one thread per connection, runs bounded by the sandbox's concurrency.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from toolrl.sandbox import rundir
from toolrl.sandbox.backend import SandboxBackend
from toolrl.sandbox.result import Limits, RunResult

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 64 << 20
PYTHON_LANGUAGES = ("python", "python3")


class RequestError(ValueError):
    """A request that does not follow the RunCodeRequest contract (answered with 422)."""


def parse_request(body: dict[str, Any], defaults: Limits, max_timeout_s: float) -> dict:
    """Validate a RunCodeRequest; returns keyword arguments for `SandboxBackend.run`."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    code = body.get("code")
    if not isinstance(code, str):
        raise RequestError("field 'code' is required and must be a string")
    stdin = body.get("stdin") or ""
    if not isinstance(stdin, str):
        raise RequestError("field 'stdin' must be a string or null")
    overrides: dict[str, Any] = {}
    timeout = body.get("run_timeout")
    if timeout is not None:
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise RequestError("field 'run_timeout' must be a positive number of seconds")
        overrides["timeout_s"] = min(float(timeout), max_timeout_s)
    memory = body.get("memory_limit_MB")
    if memory is not None and not isinstance(memory, int):
        raise RequestError("field 'memory_limit_MB' must be an integer (-1 for the default)")
    if memory is not None and memory > 0:
        overrides["memory_mb"] = memory
    files = {}
    raw_files = body.get("files") or {}
    if not isinstance(raw_files, dict):
        raise RequestError("field 'files' must be an object mapping names to base64 contents")
    for name, content in raw_files.items():
        if content is None:  # SandboxFusion allows (and skips) null contents
            continue
        try:
            rundir.check_name(name)
        except rundir.RunDirError as exc:
            raise RequestError(f"files: {exc}") from None
        try:
            files[str(name)] = base64.b64decode(content, validate=True)
        except (binascii.Error, TypeError) as exc:
            raise RequestError(f"files[{name!r}] is not valid base64: {exc}") from None
    fetch = body.get("fetch_files") or []
    if not isinstance(fetch, list) or not all(isinstance(n, str) for n in fetch):
        raise RequestError("field 'fetch_files' must be a list of file names")
    return {
        "code": code,
        "stdin": stdin,
        "limits": dataclasses.replace(defaults, **overrides),
        "files": files,
        "fetch_files": fetch,
    }


class _Handler(BaseHTTPRequestHandler):
    server: SandboxHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/ping":
            self._send_json(HTTPStatus.OK, "pong")
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"detail": f"no such endpoint: GET {self.path}"})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/run_code":
            self._send_json(HTTPStatus.NOT_FOUND, {"detail": f"no such endpoint: POST {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"detail": "request too large"})
            self.close_connection = True
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            request = parse_request(body, self.server.sandbox.limits, self.server.max_timeout_s)
        except (json.JSONDecodeError, UnicodeDecodeError, RequestError) as exc:
            self._send_json(HTTPStatus.UNPROCESSABLE_ENTITY, {"detail": str(exc)})
            return
        language = body.get("language", "python")
        if language not in PYTHON_LANGUAGES:
            message = f"language {language!r} is not supported by this server (only python)"
            result = RunResult.sandbox_error(message, self.server.sandbox.isolation)
        else:
            result = self.server.sandbox.run_sync(**request)
        self._send_json(HTTPStatus.OK, result.to_dict())


class SandboxHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding the sandbox its handlers run code in."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], sandbox: SandboxBackend, max_timeout_s: float = 300.0
    ) -> None:
        super().__init__(address, _Handler)
        self.sandbox = sandbox
        self.max_timeout_s = max_timeout_s

    @property
    def url(self) -> str:
        """The `/run_code` URL clients should use."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/run_code"
