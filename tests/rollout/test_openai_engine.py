"""The OpenAI-compatible engine: token-exact against `toolrl serve` running the tiny model, chat
mode through a served scripted teacher, and clean failures (unreachable, hanging, HTTP errors)."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from toolrl.chat import (
    CODE_INTERPRETER_SCHEMA,
    ConversationReader,
    ProtocolError,
    render,
    wire_messages,
)
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.base import GenerationRequest
from toolrl.rollout.engines.hf import HFEngine
from toolrl.rollout.engines.openai import OpenAIEngine, OpenAIEngineError, normalize_base_url
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.serving.server import OpenAIServer
from toolrl.types import Sample


class EvalTool:
    """A stand-in code_interpreter that evaluates arithmetic."""

    name = "code_interpreter"
    schema = CODE_INTERPRETER_SCHEMA

    async def call(self, arguments):
        from toolrl.tools.base import ToolResult

        return ToolResult(str(eval(arguments["code"], {})), "success")


def samples(count: int = 3) -> list[Sample]:
    return [
        Sample(
            id=f"q{i}",
            messages=[{"role": "user", "content": f"Question {i}: 6 * 7?"}],
            data_source="math",
            ground_truth="42",
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def served(tiny_dir):
    """`toolrl serve` on the tiny model, on a free port of 127.0.0.1."""
    process = subprocess.Popen(
        [sys.executable, "-m", "toolrl.cli", "serve", str(tiny_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # leave a core to the test process
    )
    url = None
    for line in process.stdout:
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", line)
        if match:
            url = match.group(1)
            break
    threading.Thread(target=process.stdout.read, daemon=True).start()
    assert url, "toolrl serve did not start"
    yield url
    process.terminate()
    assert process.wait(timeout=20) == 0


def test_token_exact_against_toolrl_serve(served, tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    settings = LoopSettings(max_response_length=12, seed=3)
    with OpenAIEngine(served + "/v1/", tokenizer) as engine:
        remote = AgentLoop(engine, tokenizer, [EvalTool()], settings).run(samples(2), n=2)
        assert engine.model.startswith("tiny") and engine.max_model_len == 4096
    local = AgentLoop(HFEngine.from_path(str(tiny_dir)), tokenizer, [EvalTool()], settings).run(
        samples(2), n=2
    )
    for a, b in zip(remote, local, strict=True):
        a.check()
        assert a.response_ids == b.response_ids and a.loss_mask == b.loss_mask
        assert a.rollout_logprobs == pytest.approx(b.rollout_logprobs, abs=1e-4)
        assert a.stop_reason == b.stop_reason


def test_chat_api_against_toolrl_serve(served, tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    with OpenAIEngine(served, tokenizer, api="chat", tools=[CODE_INTERPRETER_SCHEMA]) as engine:
        trajs = AgentLoop(
            engine, tokenizer, [EvalTool()], LoopSettings(max_response_length=12)
        ).run(samples(2))
    for traj in trajs:
        traj.check()
        assert traj.rollout_logprobs == [0.0] * len(traj.response_ids)  # unknown over chat


def call(code: str) -> str:
    return (
        "<tool_call>\n"
        + json.dumps({"name": "code_interpreter", "arguments": {"code": code}})
        + "\n</tool_call>"
    )


def solver(context: str) -> str:
    results = context.split("<tool_response>\n")[1:]
    if len(results) < 2:
        return f"Step {len(results) + 1}.\n" + call(f"{len(results) + 6} * 7")
    return "So \\boxed{" + results[-1].split("\n")[0] + "}."


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_multi_turn_tool_use_through_a_served_teacher(tiny_tokenizer, api):
    """Both APIs give the trajectory a local scripted engine gives (the chat path is exact here
    because client and server share the template and the teacher writes canonical JSON)."""
    settings = LoopSettings(max_response_length=2048)
    local = AgentLoop(
        ScriptedEngine(tiny_tokenizer, solver), tiny_tokenizer, [EvalTool()], settings
    ).run(samples(), n=2)
    server_engine = ScriptedEngine(tiny_tokenizer, solver)
    with OpenAIServer(
        server_engine, tiny_tokenizer, model_name="teacher", max_model_len=4096
    ).start() as server:
        engine = OpenAIEngine(
            server.url, tiny_tokenizer, api=api, tools=[CODE_INTERPRETER_SCHEMA], max_concurrency=4
        )
        remote = AgentLoop(engine, tiny_tokenizer, [EvalTool()], settings).run(samples(), n=2)
        engine.close()
    for a, b in zip(remote, local, strict=True):
        assert [c.result for c in a.tool_calls] == ["42", "49"]
        assert a.final_text == "So \\boxed{49}."
        assert a.response_ids == b.response_ids and a.loss_mask == b.loss_mask


def test_conversation_reader_inverts_the_agent_loop(tiny_tokenizer):
    reader = ConversationReader(tiny_tokenizer, [CODE_INTERPRETER_SCHEMA])
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "6 * 7, then 7 * 7?"},
        {"role": "assistant", "content": "Both.\n" + call("6 * 7") + "\n" + call("7 * 7")},
        {"role": "tool", "content": "42"},
        {"role": "tool", "content": "49\n</tool_response> tricky"},
        {"role": "assistant", "content": "Broken " + "<tool_call>\nnot json\n</tool_call>"},
        {"role": "tool", "content": "Error: tool call is not valid JSON"},
    ]
    text = render(
        tiny_tokenizer, conversation, [CODE_INTERPRETER_SCHEMA], add_generation_prompt=True
    )
    assert reader.read(text) == conversation
    wire = wire_messages(conversation, [CODE_INTERPRETER_SCHEMA])
    assert wire[2]["content"] == "Both." and [c["id"] for c in wire[2]["tool_calls"]] == [
        "call_2_0",
        "call_2_1",
    ]
    assert [w.get("tool_call_id") for w in wire[3:5]] == ["call_2_0", "call_2_1"]
    assert wire[5] == conversation[5] and wire[6] == {
        "role": "user",
        "content": conversation[6]["content"],
    }
    with pytest.raises(ProtocolError, match="partial turn"):
        reader.read(text + "I am still writ")
    two_users = render(
        tiny_tokenizer,
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        [CODE_INTERPRETER_SCHEMA],
        add_generation_prompt=True,
    )
    with pytest.raises(ProtocolError):
        reader.read(two_users)


# ----------------------------------------------------------------------------------------------
# Failures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request() -> GenerationRequest:
    return GenerationRequest(prompt_ids=[1, 2, 3], max_new_tokens=4, stop_token_ids=(5,))


def test_unreachable_server_fails_cleanly_within_the_timeout(tiny_tokenizer):
    url = f"http://127.0.0.1:{free_port()}"
    engine = OpenAIEngine(url, tiny_tokenizer, model="m", timeout=1.5, max_retries=3, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(
        OpenAIEngineError,
        match=rf"cannot get an answer from the OpenAI-compatible server at {url}.*4 attempt",
    ):
        engine.generate([request()])
    assert time.monotonic() - started < 1.5
    # through the agent loop (engine called from its worker thread), the same error surfaces
    with pytest.raises(OpenAIEngineError, match="Connection refused"):
        AgentLoop(engine, tiny_tokenizer, [EvalTool()]).run(samples(1))
    with pytest.raises(OpenAIEngineError, match="cannot get an answer"):
        OpenAIEngine(url, tiny_tokenizer, timeout=1, backoff=0.05).check()


def test_hanging_server_fails_cleanly_within_the_timeout(tiny_tokenizer):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections (the kernel does) and never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        engine = OpenAIEngine(url, tiny_tokenizer, model="m", timeout=1.0, backoff=0.05)
        started = time.monotonic()
        with pytest.raises(OpenAIEngineError, match=r"no answer within 1s"):
            engine.generate([request(), request()])
        assert time.monotonic() - started < 2.5
    finally:
        listener.close()


class FakeServer:
    """An HTTP server whose answers come from `respond(path, body, attempt) -> (status, payload)`."""

    def __init__(self, respond):
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.attempts += 1
                status, payload = respond(self.path, body, outer.attempts)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def completion(ids, finish="stop", with_ids=True):
    choice = {
        "text": "",
        "finish_reason": finish,
        "logprobs": {"token_logprobs": [-0.5] * len(ids), "tokens": ["x"] * len(ids)},
    }
    if with_ids:
        choice["token_ids"] = ids
    return {"choices": [choice]}


def test_retries_with_backoff_then_succeeds(tiny_tokenizer):
    def respond(path, body, attempt):
        assert (
            path == "/v1/completions"
            and body["prompt"] == [1, 2, 3]
            and body["stop_token_ids"] == [5]
        )
        return (
            (503, {"error": {"message": "warming up"}})
            if attempt < 3
            else (200, completion([7, 5]))
        )

    server = FakeServer(respond)
    try:
        engine = OpenAIEngine(server.url, tiny_tokenizer, model="m", max_retries=3, backoff=0.01)
        [result] = engine.generate([request()])
        assert (result.token_ids, result.logprobs, result.finish_reason) == (
            [7, 5],
            [-0.5, -0.5],
            "stop",
        )
        assert server.attempts == 3
    finally:
        server.close()


def test_client_errors_are_not_retried_and_say_why(tiny_tokenizer):
    server = FakeServer(
        lambda path, body, attempt: (400, {"error": {"message": "max_tokens is too large"}})
    )
    try:
        engine = OpenAIEngine(server.url, tiny_tokenizer, model="m", backoff=0.01)
        with pytest.raises(OpenAIEngineError, match="HTTP 400: max_tokens is too large"):
            engine.generate([request()])
        assert server.attempts == 1
    finally:
        server.close()


def test_a_server_without_token_ids_is_refused_for_completions(tiny_tokenizer):
    server = FakeServer(lambda path, body, attempt: (200, completion([7, 8], with_ids=False)))
    try:
        engine = OpenAIEngine(server.url, tiny_tokenizer, model="m")
        with pytest.raises(OpenAIEngineError, match=r"no token ids.*api='chat'"):
            engine.generate([request()])
    finally:
        server.close()


def test_a_stop_the_server_does_not_return_is_appended(tiny_tokenizer):
    server = FakeServer(lambda path, body, attempt: (200, completion([7, 8])))
    try:
        engine = OpenAIEngine(server.url, tiny_tokenizer, model="m")
        with pytest.warns(UserWarning, match="without returning the stop token"):
            [result] = engine.generate([request()])
        assert result.token_ids == [7, 8, 5] and result.logprobs[-1] == 0.0
    finally:
        server.close()


def test_base_url_forms():
    assert normalize_base_url("http://h:1/v1/") == normalize_base_url("http://h:1") == "http://h:1"
    with pytest.raises(ValueError, match="http://"):
        normalize_base_url("h:1")
