"""The python_session tool: state kept across one trajectory's calls, in the sandbox, and
never seen by another trajectory."""

import asyncio
import json

import pytest

from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.sandbox.local import Sandbox
from toolrl.sandbox.result import Limits
from toolrl.tools.python_session import PythonSession, definitions_of
from toolrl.types import Sample


@pytest.fixture(scope="module")
def tool():
    with Sandbox("auto", allow_weak_isolation=True, limits=Limits(timeout_s=2)) as box:
        yield PythonSession(box, max_output_chars=400, owns_sandbox=False)


def run(session, code):
    return asyncio.run(session.call({"code": code}))


def test_a_variable_is_kept_across_calls_and_invisible_to_another_session(tool):
    mine, other = tool.open(), tool.open()
    assert run(mine, "x = 41").status == "success"
    assert run(mine, "x += 1\nx").text == "42\n"
    missing = run(other, "x")
    assert missing.status == "error" and "NameError" in missing.text


def test_functions_classes_and_imports_are_kept(tool):
    session = tool.open()
    run(session, "import math\nk = 2\ndef double(v):\n    return k * v\nclass Box:\n    size = 3")
    assert run(session, "b = Box()\ndouble(b.size) + math.floor(1.5)").text == "7\n"
    assert run(session, "b.size").text == "3\n"  # an instance of a session class survives


def test_what_cannot_be_saved_is_named_and_an_error_keeps_earlier_state(tool):
    session = tool.open()
    kept = run(session, "n = 5\ngen = (i for i in range(3))")
    assert "not kept (cannot be saved): gen" in kept.text
    failed = run(session, "n = 6\n1 / 0")
    assert failed.status == "error" and "ZeroDivisionError" in failed.text
    assert run(session, "n").text == "6\n"  # like a notebook: what ran before the error stays
    timed_out = run(session, "n = 7\nwhile True: pass")
    assert "TimeoutError" in timed_out.text
    assert run(session, "n").text == "6\n"  # a killed cell saves nothing


def test_the_code_runs_in_the_sandbox_not_here(tool):
    session = tool.open()
    cwd = run(session, "import os\nos.getcwd()").text
    assert "/work" not in cwd and cwd.strip()


def test_an_idle_session_forgets_and_says_so(tool):
    idle = PythonSession(tool.sandbox, idle_timeout=0.0, owns_sandbox=False).open()
    run(idle, "y = 1")
    result = run(idle, "y")
    assert "idle too long" in result.text and "NameError" in result.text


def test_bad_arguments_are_an_error_observation(tool):
    result = asyncio.run(tool.open().call({"source": "1"}))
    assert result.status == "error" and "`code`" in result.text


def test_definitions_are_read_from_the_top_level_only():
    cell = "import numpy as np, os.path\nfrom math import pi\ndef f():\n    import json\nx = 1"
    found = definitions_of(cell)
    assert sorted(found) == ["f", "np", "os", "pi"]
    assert definitions_of("def broken(:") == {}


def session_policy(context: str) -> str:
    responses = context.count("<tool_response>")
    if responses == 0:
        code = "secret = 7" if "first" in context else "secret"
    elif responses == 1:
        code = "secret * 6"
    else:
        return "done"
    call = {"name": "python_session", "arguments": {"code": code}}
    return "<tool_call>\n" + json.dumps(call) + "\n</tool_call>"


def test_in_the_agent_loop_each_trajectory_has_its_own_state(tool, tiny_tokenizer):
    engine = ScriptedEngine(tiny_tokenizer, session_policy)
    loop = AgentLoop(engine, tiny_tokenizer, [tool], LoopSettings())
    samples = [
        Sample(id, [{"role": "user", "content": id}], "test", "42") for id in ("first", "second")
    ]
    first, second = loop.run(samples)
    assert first.tool_calls[1].result == "42\n"
    assert "NameError" in second.tool_calls[0].result
    assert "NameError" in second.tool_calls[1].result
