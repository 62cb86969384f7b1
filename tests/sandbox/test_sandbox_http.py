"""The SandboxFusion-compatible server and the client backend.

Requests are shaped exactly as verl's sandbox_fusion client sends them (same fields, same
headers, a JSON body posted to the /run_code URL), and responses are read the way it reads them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from toolrl.sandbox.client import RemoteSandbox, endpoint
from toolrl.sandbox.local import Sandbox
from toolrl.sandbox.result import Limits
from toolrl.sandbox.server import SandboxHTTPServer


@pytest.fixture(scope="module")
def server(strongest_sandbox: Sandbox):
    httpd = SandboxHTTPServer(("127.0.0.1", 0), strongest_sandbox).start()
    yield httpd
    httpd.close()


def post_like_verl(url: str, code: str, stdin: str = "", timeout: int = 5, **extra) -> tuple:
    """What verl's call_sandbox_api does, with urllib instead of requests."""
    payload = json.dumps(
        {
            "compile_timeout": timeout,
            "run_timeout": timeout,
            "code": code,
            "stdin": stdin,
            "language": "python",
            "files": {},
            "fetch_files": [],
            **extra,
        }
    )
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    request = urllib.request.Request(url, data=payload.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout + 10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_run_code_contract(server: SandboxHTTPServer) -> None:
    status, body = post_like_verl(server.url, "print(int(input()) * 2)", stdin="21\n")
    assert status == 200
    assert {"status", "message", "compile_result", "run_result", "files"} <= set(body)
    assert body["status"] == "Success" and body["compile_result"] is None
    run = body["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 0 and run["stdout"] == "42\n"
    assert isinstance(run["execution_time"], float) and run["stderr"] == ""


def test_failures_read_like_sandboxfusion(server: SandboxHTTPServer) -> None:
    _, crashed = post_like_verl(server.url, "raise SystemExit(3)")
    assert crashed["status"] == "Failed" and crashed["run_result"]["status"] == "Finished"
    assert crashed["run_result"]["return_code"] == 3
    _, slow = post_like_verl(server.url, "while True: pass", timeout=1)
    assert slow["status"] == "Failed" and slow["run_result"]["status"] == "TimeLimitExceeded"
    _, other = post_like_verl(server.url, "int main() {}", language="cpp")
    assert other["status"] == "SandboxError" and "cpp" in other["message"]


def test_files_and_memory_limit_fields(server: SandboxHTTPServer) -> None:
    code = "open('out.bin', 'wb').write(open('in.bin', 'rb').read()[::-1])"
    files = {"in.bin": base64.b64encode(b"abc").decode()}
    _, body = post_like_verl(server.url, code, files=files, fetch_files=["out.bin"])
    assert base64.b64decode(body["files"]["out.bin"]) == b"cba"
    _, bomb = post_like_verl(server.url, "x = bytearray(2 * 1024**3)", memory_limit_MB=128)
    assert bomb["status"] == "Failed" and bomb["run_result"]["limit_exceeded"] == "memory"


def test_bad_requests_and_ping(server: SandboxHTTPServer) -> None:
    request = urllib.request.Request(server.url, data=b'{"language": "python"}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 422
    ping_url = server.url.replace("/run_code", "/v1/ping")
    with urllib.request.urlopen(ping_url, timeout=10) as response:
        assert json.loads(response.read()) == "pong"


def test_client_against_the_server(server: SandboxHTTPServer) -> None:
    client = RemoteSandbox(server.url)
    result = client.run_sync("import sys\nprint(sys.stdin.read().upper())", stdin="abc")
    assert result.status == "Success" and result.stdout == "ABC\n"
    assert result.isolation  # the server's level comes back

    async def many():
        return await asyncio.gather(*(client.run(f"print({i})") for i in range(10)))

    assert [r.stdout for r in asyncio.run(many())] == [f"{i}\n" for i in range(10)]


def test_endpoint_normalisation() -> None:
    assert endpoint("http://h:1") == "http://h:1/run_code"
    assert endpoint("http://h:1/run_code") == "http://h:1/run_code"
    with pytest.raises(ValueError, match="http://host:port"):
        endpoint("h:1")


def test_client_gives_up_on_a_hanging_server() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept_and_hang():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)  # read nothing, answer nothing

    threading.Thread(target=accept_and_hang, daemon=True).start()
    port = listener.getsockname()[1]
    client = RemoteSandbox(
        f"http://127.0.0.1:{port}", max_retries=2, backoff_s=0.05, request_margin_s=0.3
    )
    started = time.monotonic()
    result = client.run_sync("print(1)", limits=Limits(timeout_s=0.1))
    elapsed = time.monotonic() - started
    listener.close()
    for connection in accepted:
        connection.close()
    assert result.status == "SandboxError" and "3 times" in result.message
    assert len(accepted) == 3 and elapsed < 5


def test_client_gives_up_on_a_server_that_is_down() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nothing listens there
    client = RemoteSandbox(f"http://127.0.0.1:{port}", max_retries=3, backoff_s=0.01)
    result = client.run_sync("print(1)")
    assert result.status == "SandboxError" and "4 times" in result.message
    assert "Connection refused" in result.message or "refused" in result.message.lower()


class _Flaky(BaseHTTPRequestHandler):
    calls: ClassVar[list[str]] = []

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _Flaky.calls.append(self.path)
        if len(_Flaky.calls) == 1:
            self.send_response(503)
            self.end_headers()
            return
        status = 422 if len(_Flaky.calls) == 3 else 200
        body = {"status": "Success", "message": "", "run_result": {"status": "Finished"}}
        payload = json.dumps(body if status == 200 else {"detail": "bad"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_client_retries_5xx_but_not_4xx() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = RemoteSandbox(f"http://127.0.0.1:{httpd.server_address[1]}", backoff_s=0.01)
        assert client.run_sync("print(1)").status == "Success"
        assert len(_Flaky.calls) == 2  # one 503, retried once
        rejected = client.run_sync("print(1)")
        assert rejected.status == "SandboxError" and "HTTP 422" in rejected.message
        assert len(_Flaky.calls) == 3  # a 4xx is an answer: not retried
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_burst_of_connections_is_answered_not_reset(server: SandboxHTTPServer, burst) -> None:
    # http.server's backlog of 5 reset most of such a burst; every connection gets its answer.
    assert burst(server.url, 64, {"code": "print(1)", "language": "python"}) == {200: 64}
    ping = server.url.replace("/run_code", "/v1/ping")
    assert burst(ping, 128) == {200: 128}


def raw_http(server: SandboxHTTPServer, request: bytes) -> bytes:
    host, port = server.address
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(request)
        return connection.recv(4096)


@pytest.mark.parametrize(
    ("body", "field", "why"),
    [
        ('{"code": "print(1)\\ud800"}', "code", "lone surrogate U+D800"),
        ('{"code": "print(1)", "run_timeout": NaN}', "run_timeout", "finite number"),
        ('{"code": "print(1)", "run_timeout": -1}', "run_timeout", "greater than 0"),
        ('{"code": "print(1)", "run_timeout": "5"}', "run_timeout", "valid number"),
        ('{"code": "print(1)", "stdin": 3}', "stdin", "valid string"),
        ('{"code": "print(1)", "memory_limit_MB": 1.5}', "memory_limit_MB", "valid integer"),
        ('{"code": "print(1)", "files": {"a": "%%%"}}', "files", "base64"),
        ('{"code": 1', "body", "not valid JSON"),
    ],
)
def test_bad_fields_get_a_422_naming_them(server: SandboxHTTPServer, body, field, why) -> None:
    request = urllib.request.Request(server.url, data=body.encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 422
    detail = json.loads(error.value.read())["detail"]
    assert field in detail and why in detail


def test_malformed_http_gets_a_400(server: SandboxHTTPServer) -> None:
    answer = raw_http(
        server, b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"
    )
    assert answer.startswith(b"HTTP/1.1 400")
    assert raw_http(server, b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")
