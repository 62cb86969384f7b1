"""`rollout.engine` means the same in every command: `build_engine` makes it, and a command
given an engine it cannot use says so (exit 2, no traceback)."""

import json

import pytest

from toolrl.cli import main
from toolrl.config import load_config
from toolrl.rollout.engines.factory import EngineError, build_engine

POLICY = '''
import json


def turn(context):
    """Compute 6 * 7 in the sandbox, then answer with what it printed."""
    if "<tool_response>" not in context:
        call = {"name": "code_interpreter", "arguments": {"code": "print(6 * 7)"}}
        return "<tool_call>\\n" + json.dumps(call) + "\\n</tool_call>"
    printed = context.split("<tool_response>\\n")[-1].split("\\n")[0]
    return "So \\\\boxed{" + printed + "}."
'''


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.py"
    path.write_text(POLICY)
    return f"{path}:turn"


@pytest.fixture
def question(tmp_path):
    path = tmp_path / "q.jsonl"
    row = {
        "prompt": [{"role": "user", "content": "What is 6 * 7?"}],
        "data_source": "toy",
        "reward_model": {"ground_truth": "42"},
    }
    path.write_text(json.dumps(row) + "\n")
    return path


def scripted(policy):
    return ["rollout.engine=scripted", f"rollout.scripted_policy={policy}", "rollout.max_turns=3"]


def test_toolrl_rollout_runs_the_scripted_engine_with_the_real_sandbox(policy, question, tmp_path):
    out = tmp_path / "rollouts.jsonl"
    args = ["rollout", "--model", "tiny", "--data", str(question), "--out", str(out), "--n", "2"]
    assert main([*args, *scripted(policy)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        calls = [c for turn in record["turns"] for c in turn["tool_calls"]]
        assert [c["status"] for c in calls] == ["success"]
        assert "<tool_response>\n42\n" in record["response"]
        assert record["response"].endswith("So \\boxed{42}.<|im_end|>")


def test_toolrl_eval_grades_the_scripted_engine(policy, question, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "--model", "tiny", "--bench", f"toy={question}", "--k", "2", "--out", str(out)]
    assert main([*args, *scripted(policy)]) == 0
    metrics = json.loads((out / "summary.json").read_text())["toy"]["metrics"]
    assert metrics["acc/avg@2"] == 1.0
    assert metrics["tool/calls_per_response"] == 1.0
    assert metrics["tool/success_rate"] == 1.0


def test_rl_refuses_an_engine_that_cannot_follow_the_policy(policy, question, tmp_path, capsys):
    args = ["rl", "tiny", f"data.train_files=[{question}]", f"trainer.output_dir={tmp_path}"]
    assert main([*args, "model.path=tiny", *scripted(policy)]) == 2
    err = capsys.readouterr().err
    assert "toolrl rl cannot use rollout.engine=scripted" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.engine=openai"], "needs rollout.server_url"),
        (["rollout.engine=openai", "rollout.server_url=http://127.0.0.1:9"], "127.0.0.1:9"),
        (["rollout.engine=scripted"], "needs rollout.scripted_policy"),
        (["rollout.engine=scripted", "rollout.scripted_policy=nowhere.py:f"], "no such file"),
        (["rollout.engine=hf"], "has no config.json"),
    ],
)
def test_an_engine_that_cannot_be_built_says_why(overrides, message):
    config = load_config(None, [*overrides, "rollout.server_timeout=2"])
    with pytest.raises(EngineError, match=message):
        build_engine(config, "tiny")


def test_a_command_given_a_bad_engine_exits_2_naming_it(question, tmp_path, capsys):
    args = ["rollout", "--model", "tiny", "--data", str(question), "--out", str(tmp_path / "o")]
    assert main([*args, "rollout.engine=scripted"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: rollout.engine=scripted needs rollout.scripted_policy")
