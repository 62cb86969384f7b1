"""The tool registry and ToolSet: config validation, per-row narrowing, sessions, per-tool metrics."""

import asyncio
import json

import pytest

from toolrl.config import ConfigError, load_config
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.tools import function_schema
from toolrl.tools.base import ToolResult
from toolrl.tools.metrics import tool_use_metrics, trajectory_tool_metrics
from toolrl.tools.registry import build_tools
from toolrl.tools.toolset import ToolSet
from toolrl.types import Sample


class Echo:
    name = "echo"
    schema = function_schema(
        "echo", "Echo the text.", {"type": "object", "properties": {"text": {"type": "string"}}}
    )

    async def call(self, arguments):
        return ToolResult(str(arguments.get("text")), "success")


class Counter:
    """A per-trajectory tool: each session counts its own calls from `start`."""

    name = "counter"
    schema = function_schema("counter", "Count.", {"type": "object", "properties": {}})

    def __init__(self):
        self.opened, self.closed = 0, 0

    def open(self, start: int = 0):
        self.opened += 1
        return _CounterSession(self, start)

    def close(self):
        pass


class _CounterSession:
    name, schema = Counter.name, Counter.schema

    def __init__(self, owner, start):
        self.owner, self.value = owner, start

    async def call(self, arguments):
        self.value += 1
        return ToolResult(str(self.value), "success")

    async def close(self):
        self.owner.closed += 1


class Broken:
    name = "broken"
    schema = function_schema("broken", "Fails.", {"type": "object", "properties": {}})

    def __init__(self, hang=False):
        self.hang = hang

    async def call(self, arguments):
        if self.hang:
            await asyncio.sleep(10)
        raise RuntimeError("server gone")


def sample(extra=None, i=0):
    return Sample(
        id=f"s{i}",
        messages=[{"role": "user", "content": "hi"}],
        data_source="test",
        ground_truth="x",
        extra_info=extra or {},
    )


def test_config_rejects_an_unknown_tool_with_the_closest_name():
    with pytest.raises(ConfigError, match=r"tools.enabled\[1\]`: unknown tool `serch`.*`search`"):
        load_config(None, ["tools.enabled=[code_interpreter,serch]"])


def test_config_search_needs_an_index():
    with pytest.raises(ConfigError, match=r"tools\.search_index` is empty"):
        load_config(None, ["tools.enabled=[search]"])


def test_default_config_builds_the_code_interpreter_alone():
    tools = build_tools(load_config().tools)
    try:
        assert tools.names == ["code_interpreter"]
    finally:
        tools.close()


def test_a_row_narrows_and_configures_its_tools():
    tools = ToolSet([Echo(), Counter()])
    assert list(tools.offered(sample())) == ["echo", "counter"]
    narrowed = sample({"tools_kwargs": {"counter": {"create_kwargs": {"start": 5}}}})
    assert tools.offered(narrowed) == {"counter": {"start": 5}}
    assert [s["function"]["name"] for s in tools.schemas_for(narrowed)] == ["counter"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"serch": {}}, "names tool `serch`, which this run does not have"),
        ({"echo": {"create_kwargs": {"x": 1}}}, "tool `echo` takes no kwargs"),
        ({"echo": {"create_kwargs": [1]}}, "must be a mapping with `create_kwargs`"),
        (["echo"], "must be a mapping of tool name"),
    ],
)
def test_a_malformed_row_names_the_sample_and_key(spec, message):
    with pytest.raises(ValueError, match=f"sample s0: extra_info.tools_kwargs.*{message}"):
        ToolSet([Echo()]).offered(sample({"tools_kwargs": spec}))


def test_unknown_raising_and_hanging_tools_become_observations():
    calls = ToolSet([Echo(), Broken()]).open(sample())
    unknown = asyncio.run(calls.call("nope", {}))
    assert unknown.status == "error" and "no tool named `nope`" in unknown.text
    raised = asyncio.run(calls.call("broken", {}))
    assert raised.status == "infra_error" and "server gone" in raised.text
    hung = ToolSet([Broken(hang=True)], call_timeout=0.1).open(sample())
    result = asyncio.run(hung.call("broken", {}))
    assert result.status == "infra_error" and "within 0.1s" in result.text


def counting_policy(context: str) -> str:
    responses = context.count("<tool_response>")
    if responses < 2:
        call = {"name": "counter", "arguments": {}}
        return "<tool_call>\n" + json.dumps(call) + "\n</tool_call>"
    return "done"


def test_each_trajectory_gets_its_own_session_closed_at_the_end(tiny_tokenizer):
    counter = Counter()
    engine = ScriptedEngine(tiny_tokenizer, counting_policy)
    loop = AgentLoop(engine, tiny_tokenizer, [Echo(), counter], LoopSettings())
    rows = [sample({"tools_kwargs": {"counter": {"create_kwargs": {"start": 10}}}}), sample(i=1)]
    first, second = loop.run(rows, n=1)
    assert [c.result for c in first.tool_calls] == ["11", "12"]
    assert [c.result for c in second.tool_calls] == ["1", "2"]
    assert counter.opened == counter.closed == 2
    # the narrowed row's prompt offers only `counter`
    assert '"echo"' not in tiny_tokenizer.decode(first.prompt_ids)
    assert '"echo"' in tiny_tokenizer.decode(second.prompt_ids)


def test_tool_metrics_break_down_per_tool():
    metrics = tool_use_metrics(
        [[("search", "success"), ("code", "error")], [("search", "infra_error")], []]
    )
    assert "tool/_unnamed/calls_per_response" in tool_use_metrics([[("", "parse_error")]])
    assert metrics["tool/calls_per_response"] == pytest.approx(1.0)
    assert metrics["tool/success_rate"] == pytest.approx(1 / 3)
    assert metrics["tool/search/calls_per_response"] == pytest.approx(2 / 3)
    assert metrics["tool/search/success_rate"] == pytest.approx(0.5)
    assert metrics["tool/code/success_rate"] == 0.0
    assert trajectory_tool_metrics([]) == {
        "tool/calls_per_response": 0.0,
        "tool/success_rate": 0.0,
    }


def test_the_registry_builds_exactly_the_names_the_config_accepts():
    from toolrl.config.schema import TOOL_NAMES
    from toolrl.tools.registry import TOOLS

    assert sorted(TOOLS) == sorted(TOOL_NAMES)


def test_rl_metrics_and_the_infra_mask_see_each_tool(tiny_tokenizer):
    from toolrl.trainers.rl import rollout_metrics

    loop = AgentLoop(
        ScriptedEngine(tiny_tokenizer, counting_policy),
        tiny_tokenizer,
        [Counter(), Broken()],
        LoopSettings(),
    )
    [traj] = loop.run([sample()])
    metrics = rollout_metrics([traj])
    assert metrics["tool/counter/calls_per_response"] == 2.0
    assert metrics["tool/counter/success_rate"] == 1.0
    assert "tool/broken/calls_per_response" not in metrics
    broken = ToolSet([Broken()]).open(sample())
    assert asyncio.run(broken.call("broken", {})).status == "infra_error"


def test_the_call_guard_must_outlast_the_interpreter_timeout():
    with pytest.raises(ConfigError, match=r"tools\.call_timeout` \(30s\) must exceed"):
        load_config(None, ["tools.timeout=30", "tools.call_timeout=30"])
    assert load_config(None, ["tools.timeout=300", "tools.call_timeout=0"]).tools.call_timeout == 0
