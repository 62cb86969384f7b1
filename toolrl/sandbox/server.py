"""An HTTP server with SandboxFusion's `POST /run_code` contract, backed by the local sandbox.

Existing SandboxFusion clients (verl's `sandbox_fusion` reward and tool, among others) can point
at `toolrl sandbox serve` unchanged. Request fields (`RunCodeRequest`): `code` (required),
`language` ("python"; others are answered with a SandboxError result), `stdin`, `run_timeout`
(seconds), `compile_timeout` (accepted, unused: Python has no compile step here),
`memory_limit_MB` (-1 or absent: the server's default), `files` (name -> base64, written into
the run directory), `fetch_files` (names whose content comes back base64 in `files`); other
fields are ignored, as SandboxFusion ignores what it does not use. The response is a
RunCodeResponse (see `result.py`). A request that breaks the contract gets a 422 (as
SandboxFusion, itself a FastAPI app, answers) whose `detail` names the field. `GET /v1/ping`
answers "pong"; `GET /health` reports the isolation level and the runs done.

FastAPI on uvicorn (`toolrl.asgi.AppServer`): a real listen backlog, and SIGINT or SIGTERM shut
down gracefully, after which `toolrl sandbox serve` closes the sandbox (its workers are killed,
its run directories and cgroups removed). Runs are bounded by the sandbox's concurrency.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import ClientDisconnect

from toolrl.asgi import AppServer
from toolrl.sandbox import rundir
from toolrl.sandbox.backend import SandboxBackend
from toolrl.sandbox.result import Limits, RunResult

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 64 << 20
PYTHON_LANGUAGES = ("python", "python3")
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class RequestError(ValueError):
    """A request that does not follow the RunCodeRequest contract (answered with 422)."""


class RunCodeRequest(BaseModel):
    """SandboxFusion's RunCodeRequest, as far as a Python sandbox uses it."""

    model_config = ConfigDict(strict=True, extra="ignore")

    code: str
    language: str = "python"
    stdin: str | None = None
    run_timeout: Seconds | None = None
    compile_timeout: Seconds | None = None
    memory_limit_MB: int | None = None
    files: dict[str, str | None] | None = None
    fetch_files: list[str] | None = None

    @field_validator("code", "stdin")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        # stdin may carry raw bytes as U+DC80..U+DCFF (surrogateescape, as RemoteSandbox sends
        # them); any other lone surrogate cannot become the bytes a program reads.
        if value is not None:
            try:
                value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as err:
                bad = value[err.start]
                raise ValueError(
                    f"contains a lone surrogate U+{ord(bad):04X} at {err.start}"
                ) from None
        return value


def parse_request(request: RunCodeRequest, defaults: Limits, max_timeout_s: float) -> dict:
    """Keyword arguments for `SandboxBackend.run` from a validated request."""
    overrides: dict[str, Any] = {}
    if request.run_timeout is not None:
        overrides["timeout_s"] = min(request.run_timeout, max_timeout_s)
    if request.memory_limit_MB is not None and request.memory_limit_MB > 0:
        overrides["memory_mb"] = request.memory_limit_MB
    files = {}
    for name, content in (request.files or {}).items():
        if content is None:  # SandboxFusion allows (and skips) null contents
            continue
        try:
            rundir.check_name(name)
        except rundir.RunDirError as exc:
            raise RequestError(f"files: {exc}") from None
        try:
            files[name] = base64.b64decode(content, validate=True)
        except binascii.Error as exc:
            raise RequestError(f"files[{name!r}] is not valid base64: {exc}") from None
    return {
        "code": request.code,
        "stdin": request.stdin or "",
        "limits": dataclasses.replace(defaults, **overrides),
        "files": files,
        "fetch_files": list(request.fetch_files or []),
    }


def build_app(sandbox: SandboxBackend, max_timeout_s: float = 300.0) -> FastAPI:
    """The FastAPI app: /run_code, /v1/ping, /health."""
    app = FastAPI(title="toolrl sandbox", docs_url=None, redoc_url=None)
    counts = {"runs": 0}

    @app.exception_handler(ClientDisconnect)
    async def _gone(_request: Request, _exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # the client left mid-body: nobody reads this

    @app.middleware("http")
    async def _limit_size(request: Request, call_next):
        length = request.headers.get("content-length", "0")
        if length.isdigit() and int(length) > MAX_REQUEST_BYTES:
            return JSONResponse({"detail": "request too large"}, status_code=413)
        return await call_next(request)

    @app.get("/v1/ping")
    def ping() -> str:
        return "pong"

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "isolation": sandbox.isolation, "runs": counts["runs"]}

    @app.post("/run_code")
    async def run_code(raw: Request) -> JSONResponse:
        # The body is JSON whatever its Content-Type says (clients of SandboxFusion differ).
        try:
            request = RunCodeRequest.model_validate(json.loads(await raw.body()))
            kwargs = parse_request(request, sandbox.limits, max_timeout_s)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse({"detail": f"the body is not valid JSON: {exc}"}, 422)
        except ValidationError as exc:
            return JSONResponse({"detail": describe_errors(exc.errors())}, 422)
        except RequestError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        if request.language not in PYTHON_LANGUAGES:
            message = f"language {request.language!r} is not supported by this server (only python)"
            result = RunResult.sandbox_error(message, sandbox.isolation)
        else:
            result = await sandbox.run(**kwargs)  # bounded by the sandbox's own concurrency
        counts["runs"] += 1
        return JSONResponse(result.to_dict())

    return app


def describe_errors(errors: list[dict]) -> str:
    """pydantic's validation errors as one line naming each field: "field 'x': why; ..."."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = f"field '{'.'.join(loc)}'" if loc else "the request body"
        parts.append(f"{where}: {error.get('msg', 'is invalid')}")
    return "; ".join(parts) or "invalid request"


class SandboxHTTPServer(AppServer):
    """`build_app(sandbox)` served at `address`; `url` is the `/run_code` URL clients use."""

    def __init__(
        self, address: tuple[str, int], sandbox: SandboxBackend, max_timeout_s: float = 300.0
    ) -> None:
        super().__init__(build_app(sandbox, max_timeout_s), *address)
        self.sandbox = sandbox

    @property
    def url(self) -> str:
        """The `/run_code` URL clients should use."""
        return f"{self.base_url}/run_code"
