"""MCP tools: a real server (the SDK's own server class) over stdio, listed, called, crashed,
hung and restarted; failures are infra_error observations that training masks."""

import asyncio
import json
import sys
from pathlib import Path

import pytest

from toolrl.config import ConfigError, load_config
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.tools.registry import build_tools
from toolrl.types import Sample

SERVER = [sys.executable, str(Path(__file__).with_name("toy_mcp_server.py"))]


@pytest.fixture(scope="module")
def toolset():
    config = load_config(
        None,
        [
            "tools.enabled=[]",
            f"tools.mcp_servers={json.dumps({'toy': SERVER})}",
            "tools.mcp_timeout=3",
        ],
    )
    tools = build_tools(config.tools)
    yield tools
    tools.close()


def call(toolset, name, **arguments):
    return asyncio.run(toolset.tools[name].call(arguments))


def test_the_server_tools_are_offered_with_their_schemas(toolset):
    assert toolset.names == ["add", "count", "crash", "hang", "fail"]
    add = toolset.tools["add"].schema["function"]
    assert add["description"] == "Add two integers."
    assert add["parameters"]["required"] == ["a", "b"]


def test_calls_are_routed_and_tool_errors_are_the_models(toolset):
    assert (call(toolset, "add", a=2, b=40).text, call(toolset, "add", a=2, b=40).status) == (
        "42",
        "success",
    )
    bad = call(toolset, "add", a="two", b=1)
    assert bad.status == "error" and "add" in bad.text
    assert call(toolset, "fail", message="boom").status == "error"


def test_a_crashed_server_is_an_infra_error_and_is_restarted(toolset):
    server = toolset.tools["count"].server
    call(toolset, "count")
    before = int(call(toolset, "count").text)
    restarts = server.restarts
    crashed = call(toolset, "crash")
    assert crashed.status == "infra_error" and "restarted" in crashed.text
    after = call(toolset, "count")
    assert after.status == "success" and int(after.text) == 1 < before  # a fresh process
    assert server.restarts == restarts + 1


def test_a_hung_server_is_an_infra_error_and_is_restarted(toolset):
    server = toolset.tools["count"].server
    hung = call(toolset, "hang", seconds=30)
    assert hung.status == "infra_error" and "did not answer within 3s" in hung.text
    assert call(toolset, "count").text == "1"
    assert call(toolset, "add", a=1, b=1).text == "2"
    assert server.restarts >= 1


def policy(context: str) -> str:
    """Crash the server in a sample that asks for it, else add, then answer."""
    if "<tool_response>" in context:
        return "\\boxed{" + context.rsplit("<tool_response>\n", 1)[1].split("\n")[0] + "}"
    name, arguments = ("crash", {}) if "BREAKIT" in context else ("add", {"a": 20, "b": 22})
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def test_in_a_rollout_a_crash_is_masked_and_the_next_rollout_gets_a_fresh_server(
    toolset, tiny_tokenizer
):
    loop = AgentLoop(
        ScriptedEngine(tiny_tokenizer, policy), tiny_tokenizer, toolset, LoopSettings()
    )
    [crashed] = loop.run([Sample("a", [{"role": "user", "content": "BREAKIT"}], "test", "42")])
    assert crashed.stop_reason == "tool_error" and crashed.excluded_from_training
    [fine] = loop.run([Sample("b", [{"role": "user", "content": "add"}], "test", "42")])
    assert fine.final_text == "\\boxed{42}" and not fine.excluded_from_training


def test_a_server_that_cannot_start_names_its_key():
    config = load_config(
        None,
        ["tools.enabled=[]", "tools.mcp_servers={bad: [/no/such/server]}", "tools.mcp_timeout=3"],
    )
    with pytest.raises(ConfigError, match=r"tools\.mcp_servers\.bad: MCP server `bad`"):
        build_tools(config.tools)
    with pytest.raises(ConfigError, match=r"tools\.mcp_servers\.x` must be a command line"):
        load_config(None, ["tools.mcp_servers={x: []}"])
