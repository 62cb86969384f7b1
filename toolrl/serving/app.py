"""The FastAPI app of `toolrl serve`: routes to an `OpenAIServer`, JSON errors in the OpenAI
format (`{"error": {"message", "type", "param", "code"}}`) for every failure, SSE for streams."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from toolrl.serving.protocol import RequestError, error_body, json_body

ROUTES = "/health, /v1/models, /v1/completions, /v1/chat/completions"


class Routes(Protocol):
    """What answers each route (`OpenAIServer`): a dict, or SSE lines for a stream."""

    def health(self) -> dict[str, Any]: ...
    def models(self) -> dict[str, Any]: ...
    async def completions(self, body: Any) -> Any: ...
    async def chat_completions(self, body: Any) -> Any: ...


def build_app(server: Routes) -> FastAPI:
    app = FastAPI(title="toolrl serve", docs_url=None, redoc_url=None)

    def error(status: int, message: str, param: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(status, message, param), status_code=status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error(404, f"no route {request.url.path} (try {ROUTES})")
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(RequestError)
    async def _refused(_request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, str(exc), exc.param)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_request: Request, _exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # the client left mid-body: nobody reads this

    @app.exception_handler(Exception)
    async def _failed(_request: Request, exc: Exception) -> JSONResponse:
        # the engine failed: the client gets a 500 that says why
        return error(500, f"{type(exc).__name__}: {exc}")

    @app.get("/health")
    async def health() -> dict:
        return server.health()

    @app.get("/v1/models")
    async def models() -> dict:
        return server.models()

    async def answer(route, request: Request):
        out = await route(json_body(await request.body()))
        if isinstance(out, dict):
            return JSONResponse(out)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(out, media_type="text/event-stream", headers=headers)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(server.completions, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer(server.chat_completions, request)

    return app
