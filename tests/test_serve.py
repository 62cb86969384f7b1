"""`toolrl serve`: the tiny model behind an OpenAI-compatible API on 127.0.0.1, started and
stopped by the test; plus the routes' behaviour on an in-process server with a scripted engine."""

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
import torch

from toolrl.chat import CODE_INTERPRETER_SCHEMA, encode, render
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.serving.server import OpenAIServer


def http(url: str, payload: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class ServeProcess:
    """`toolrl serve MODEL --port 0` in a subprocess; the URL is read from its first line."""

    def __init__(self, model_dir):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "toolrl.cli", "serve", str(model_dir), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},  # leave a core to the test process
        )
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            match = re.search(r"serving \S+ at (http://127\.0\.0\.1:\d+)/v1", line)
            if match:
                self.url = match.group(1)
                break
        else:
            raise RuntimeError("toolrl serve did not start:\n" + "".join(lines))
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture(scope="module")
def served(tiny_dir):
    server = ServeProcess(tiny_dir)
    yield server
    assert server.stop() == 0  # SIGTERM stops it cleanly


@pytest.fixture(scope="module")
def model(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval()


def test_health_and_models(served):
    status, health = http(served.url + "/health")
    assert status == 200 and health["status"] == "ok"
    status, models = http(served.url + "/v1/models")
    assert status == 200 and models["data"][0]["max_model_len"] == 4096
    assert models["data"][0]["id"].startswith("tiny")


def test_completion_returns_sampled_ids_and_their_logprobs(served, model):
    prompt = [72, 105, 33, 10]
    request = {"prompt": prompt, "max_tokens": 8, "temperature": 0.7, "seed": 11, "logprobs": 1}
    status, body = http(
        served.url + "/v1/completions",
        {**request, "return_token_ids": True, "return_tokens_as_token_ids": True},
    )
    assert status == 200
    [choice] = body["choices"]
    ids = choice["token_ids"]
    assert choice["logprobs"]["tokens"] == [f"token_id:{t}" for t in ids]
    assert choice["prompt_token_ids"] == prompt and body["usage"]["completion_tokens"] == len(ids)
    # the log-probs are log_softmax(logits / T) of the model at each sampled position
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
    expected = (
        torch.log_softmax(logits / 0.7, -1).gather(-1, torch.tensor(ids)[:, None]).squeeze(-1)
    )
    assert torch.allclose(torch.tensor(choice["logprobs"]["token_logprobs"]), expected, atol=1e-4)
    # greedy decoding picks the argmax
    _, greedy = http(
        served.url + "/v1/completions",
        {"prompt": prompt, "max_tokens": 4, "temperature": 0, "return_token_ids": True},
    )
    tokens = greedy["choices"][0]["token_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    assert tokens == logits.argmax(-1).tolist()


def test_concurrent_requests_share_decoding_batches(served):
    base = {"max_tokens": 16, "temperature": 1.0, "return_token_ids": True, "ignore_eos": True}
    results = {}

    def send(i):
        results[i] = http(
            served.url + "/v1/completions", {**base, "prompt": [65 + i] * (3 + i), "seed": 100 + i}
        )[1]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(results[i]["choices"][0]["token_ids"]) == 16 for i in range(4))
    assert http(served.url + "/health")[1]["peak_running"] >= 2
    # a seeded request gets the same tokens alone as it did inside a shared batch
    alone = http(served.url + "/v1/completions", {**base, "prompt": [65 + 2] * 5, "seed": 102})[1]
    assert alone["choices"][0]["token_ids"] == results[2]["choices"][0]["token_ids"]


def test_chat_completion_renders_with_the_template(served, tiny_tokenizer):
    messages = [{"role": "user", "content": "What is 6 * 7?"}]
    status, body = http(
        served.url + "/v1/chat/completions",
        {
            "messages": messages,
            "tools": [CODE_INTERPRETER_SCHEMA],
            "max_tokens": 6,
            "logprobs": True,
        },
    )
    assert status == 200
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in (
        "stop",
        "length",
        "tool_calls",
    )
    assert len(choice["logprobs"]["content"]) == body["usage"]["completion_tokens"]
    prompt = encode(
        tiny_tokenizer,
        render(tiny_tokenizer, messages, [CODE_INTERPRETER_SCHEMA], add_generation_prompt=True),
    )
    assert body["usage"]["prompt_tokens"] == len(prompt)


@pytest.mark.parametrize(
    ("path", "payload", "status", "message"),
    [
        ("/v1/completions", {"prompt": "hi", "stop": ["\n"]}, 400, "stop_token_ids"),
        ("/v1/completions", {"prompt": "hi", "logprobs": 5}, 400, "`logprobs`"),
        ("/v1/completions", {"prompt": "hi", "temperature": "0.7"}, 400, "`temperature`"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "`max_tokens`"),
        ("/v1/completions", {"prompt": "hi", "temperature": float("nan")}, 400, "`temperature`"),
        ("/v1/completions", {"prompt": "hi", "frobnicate": 1}, 400, "`frobnicate` is not"),
        ("/v1/completions", {"max_tokens": 3}, 400, "`prompt` is required"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "\ud800"}]},
            400,
            "lone surrogate",
        ),
        ("/v1/chat/completions", {"messages": [], "top_logprobs": 2}, 400, "`top_logprobs`"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"},
            400,
            "tool_choice",
        ),
        ("/v1/completions", {"prompt": [1, 10**9]}, 400, "outside the vocabulary"),
        ("/v1/completions", {"prompt": [1] * 5000}, 400, "context is 4096"),
        ("/v1/completions", {"prompt": "hi", "model": "gpt-4"}, 404, "not served here"),
        ("/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "temperature"),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        ("/v1/nothing", {}, 404, "no route"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(served, path, payload, status, message):
    got, body = http(served.url + path, payload)
    assert got == status and message in body["error"]["message"]


def call(code: str) -> str:
    return (
        "<tool_call>\n"
        + json.dumps({"name": "code_interpreter", "arguments": {"code": code}})
        + "\n</tool_call>"
    )


def test_chat_parses_hermes_tool_calls_and_reads_them_back(tiny_tokenizer):
    contexts = []

    def policy(context):
        contexts.append(context)
        return (
            "I will compute.\n" + call("print(6 * 7)")
            if "<tool_response>" not in context
            else "\\boxed{42}"
        )

    engine = ScriptedEngine(tiny_tokenizer, policy)
    with OpenAIServer(engine, tiny_tokenizer, model_name="s", max_model_len=4096).start() as server:
        messages = [{"role": "user", "content": "6 * 7?"}]
        _, body = http(
            server.url + "/v1/chat/completions",
            {"messages": messages, "tools": [CODE_INTERPRETER_SCHEMA]},
        )
        [choice] = body["choices"]
        assert choice["finish_reason"] == "tool_calls"
        reply = choice["message"]
        assert reply["content"] == "I will compute."
        [tool_call] = reply["tool_calls"]
        assert tool_call["function"] == {
            "name": "code_interpreter",
            "arguments": json.dumps({"code": "print(6 * 7)"}),
        }
        # the structured call, sent back with its result, renders as the model wrote it
        history = [
            *messages,
            reply,
            {"role": "tool", "tool_call_id": tool_call["id"], "content": "42\n"},
        ]
        _, body = http(
            server.url + "/v1/chat/completions",
            {"messages": history, "tools": [CODE_INTERPRETER_SCHEMA]},
        )
        assert body["choices"][0]["message"] == {"role": "assistant", "content": "\\boxed{42}"}
        raw = [
            *messages,
            {"role": "assistant", "content": "I will compute.\n" + call("print(6 * 7)")},
            {"role": "tool", "content": "42\n"},
        ]
        assert contexts[-1] == render(
            tiny_tokenizer, raw, [CODE_INTERPRETER_SCHEMA], add_generation_prompt=True
        )
        # without tools (or tool_choice none) the text comes back as it was written
        _, body = http(
            server.url + "/v1/chat/completions",
            {"messages": messages, "tools": [CODE_INTERPRETER_SCHEMA], "tool_choice": "none"},
        )
        assert "<tool_call>" in body["choices"][0]["message"]["content"]
        assert http(server.url + "/health")[1]["requests_done"] == 3


def test_a_burst_of_connections_is_answered_not_reset(served, burst):
    # http.server's backlog of 5 reset up to 47 of such a burst; now each gets its completion.
    body = {"prompt": [72, 105], "max_tokens": 2, "temperature": 0}
    assert burst(served.url + "/v1/completions", 64, body) == {200: 64}
    assert burst(served.url + "/health", 128) == {200: 128}


@pytest.fixture
def scripted_server(tiny_tokenizer):
    def policy(context):
        return "I will compute.\n" + call("print(6 * 7)")

    engine = ScriptedEngine(tiny_tokenizer, policy)
    with OpenAIServer(engine, tiny_tokenizer, model_name="s", max_model_len=4096).start() as server:
        yield server


@pytest.fixture
def client(scripted_server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=scripted_server.url + "/v1", api_key="none", max_retries=0)


def test_the_openai_client_gets_n_choices_with_tool_calls(client):
    messages = [{"role": "user", "content": "6 * 7?"}]
    reply = client.chat.completions.create(
        model="s", messages=messages, tools=[CODE_INTERPRETER_SCHEMA], n=3, logprobs=True
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content == "I will compute."
        [tool_call] = choice.message.tool_calls
        assert tool_call.function.name == "code_interpreter"
        assert json.loads(tool_call.function.arguments) == {"code": "print(6 * 7)"}
        assert choice.logprobs.content
    assert reply.usage.completion_tokens > 0
    completion = client.completions.create(model="s", prompt="hi", max_tokens=4, n=2)
    assert len(completion.choices) == 2


def test_the_openai_client_streams_chat_with_tool_calls(client):
    messages = [{"role": "user", "content": "6 * 7?"}]
    stream = client.chat.completions.create(
        model="s",
        messages=messages,
        tools=[CODE_INTERPRETER_SCHEMA],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    for index in (0, 1):
        deltas = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert deltas[0].delta.role == "assistant" and deltas[-1].finish_reason == "tool_calls"
        content = "".join(d.delta.content or "" for d in deltas)
        calls = [t for d in deltas for t in d.delta.tool_calls or []]
        assert content == "I will compute." and calls[0].id and calls[0].function.name
        arguments = "".join(t.function.arguments or "" for t in calls)
        assert json.loads(arguments) == {"code": "print(6 * 7)"} and len(calls) > 2
    # the SDK's own stream accumulator puts the message back together
    with client.chat.completions.stream(
        model="s", messages=messages, tools=[CODE_INTERPRETER_SCHEMA]
    ) as stream:
        final = stream.get_final_completion()
    [tool_call] = final.choices[0].message.tool_calls
    assert json.loads(tool_call.function.arguments) == {"code": "print(6 * 7)"}


def test_the_openai_client_streams_completions_token_by_token(client, scripted_server):
    whole = client.completions.create(model="s", prompt="hi", max_tokens=6, seed=1)
    chunks = list(
        client.completions.create(model="s", prompt="hi", max_tokens=6, seed=1, stream=True)
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole.choices[0].text and len(texts) == 7  # 6 tokens, then finish
    assert chunks[-1].choices[0].finish_reason == "length"


def test_the_openai_client_hears_why_a_parameter_is_refused(client):
    openai = pytest.importorskip("openai")
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="top alternatives are not computed"):
        client.chat.completions.create(model="s", messages=messages, logprobs=True, top_logprobs=3)
    with pytest.raises(openai.BadRequestError, match="`presence_penalty`"):
        client.chat.completions.create(model="s", messages=messages, presence_penalty=0.5)
    with pytest.raises(openai.BadRequestError, match="`n`"):
        client.chat.completions.create(model="s", messages=messages, n=0)


def test_malformed_http_gets_a_400(scripted_server):
    import socket

    host, port = scripted_server.http.address
    for request in (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{oops",
    ):
        with socket.create_connection((host, port), timeout=10) as connection:
            connection.sendall(request)
            assert connection.recv(4096).startswith(b"HTTP/1.1 400")
