"""`toolrl data collect`: a scripted teacher through the agent loop and the real sandbox; the rows
carry the sandbox's output exactly as the model read it, and load as SFT data."""

import json

import pytest

from toolrl.chat import render_with_mask
from toolrl.cli import main
from toolrl.config import ToolsConfig
from toolrl.data.collect import collect, conversation_key
from toolrl.data.sft import load_sft_examples
from toolrl.rollout.agent_loop import LoopSettings
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.serving.server import OpenAIServer
from toolrl.tools.code_interpreter import CodeInterpreter, middle_truncate
from toolrl.types import Sample

LONG = "print('ab' * 300)\nprint(6 * 7)"
TASKS = {
    "mul": ("6 * 7", "42"),  # notebook printing: the trailing expression's value is printed
    "long": (LONG, "42"),  # 603 characters printed: the model reads them middle-truncated
    "error": ("1 / 0", "0"),  # the tool reports a ZeroDivisionError; the answer is wrong
    "loop": ("2 + 2  # again", "4"),  # calls the tool every turn: stops at max_turns
}

POLICY = '''
import json

def teacher(context):
    """Run the task's code once, then box the last line the tool printed."""
    code = context.split("Compute: ")[1].split("<|im_end|>")[0]
    outputs = context.split("<tool_response>\\n")[1:]
    if not outputs or "again" in code:
        call = {"name": "code_interpreter", "arguments": {"code": code}}
        return "Let me run it.\\n<tool_call>\\n" + json.dumps(call) + "\\n</tool_call>"
    printed = outputs[-1].split("\\n</tool_response>")[0].strip().splitlines()
    return "The result is \\\\boxed{" + (printed[-1] if printed else "") + "}."
'''


def load_teacher_policy(tmp_path):
    path = tmp_path / "teacher.py"
    path.write_text(POLICY)
    namespace = {}
    exec(compile(POLICY, str(path), "exec"), namespace)
    return path, namespace["teacher"]


def tasks() -> list[Sample]:
    return [
        Sample(
            id=name,
            messages=[{"role": "user", "content": f"Compute: {code}"}],
            data_source="math",
            ground_truth=gt,
        )
        for name, (code, gt) in TASKS.items()
    ]


@pytest.fixture(scope="module")
def interpreter():
    tool = CodeInterpreter.from_config(ToolsConfig())
    yield tool
    tool.sandbox.close()


def run(tiny_tokenizer, tmp_path, interpreter, **kwargs):
    _, policy = load_teacher_policy(tmp_path)
    settings = LoopSettings(max_turns=3, max_response_length=4096)
    engine = ScriptedEngine(tiny_tokenizer, policy)
    return collect(engine, tiny_tokenizer, [interpreter], tasks(), settings=settings, **kwargs)


def test_rows_carry_exactly_what_the_sandbox_printed(tiny_tokenizer, tmp_path, interpreter):
    result = run(tiny_tokenizer, tmp_path, interpreter, n=2)
    by_id = {row["id"]: row for row in result.rows}
    assert sorted(by_id) == ["long#0", "mul#0"]
    for row in result.rows:
        code = json.loads(
            row["messages"][1]["content"].split("<tool_call>\n")[1].split("\n</tool_call>")[0]
        )["arguments"]["code"]
        # run the same code in the sandbox directly: the row holds what it printed, truncated
        # to the 256 characters the model was shown
        printed = interpreter.sandbox.run_sync(interpreter.prepare(code)).run_result.stdout
        assert row["messages"][2] == {"role": "tool", "content": middle_truncate(printed, 256)}
    assert by_id["mul#0"]["messages"][2]["content"] == "42\n"
    long_output = by_id["long#0"]["messages"][2]["content"]
    assert (
        len(long_output) <= 256
        and "characters truncated" in long_output
        and long_output.endswith("ab\n42\n")
    )
    assert by_id["mul#0"]["messages"][-1] == {
        "role": "assistant",
        "content": "The result is \\boxed{42}.",
    }
    assert by_id["mul#0"]["tools"] == [interpreter.schema]
    assert by_id["mul#0"]["acc"] is True and by_id["mul#0"]["num_tool_calls"] == 1


def test_rows_render_to_the_rollout_tokens(tiny_tokenizer, tmp_path, interpreter):
    result = run(tiny_tokenizer, tmp_path, interpreter)
    for traj, reason in zip(result.trajectories, result.drop_reasons, strict=True):
        if reason is not None:
            continue
        row = next(r for r in result.rows if r["id"] == f"{traj.sample.id}#{traj.group_index}")
        rendered = render_with_mask(tiny_tokenizer, row["messages"], row["tools"])
        full = traj.prompt_ids + traj.response_ids
        # SFT on the row trains exactly the tokens the teacher sampled, in the same context
        assert rendered.ids[: len(full)] == full
        assert rendered.mask[len(traj.prompt_ids) : len(full)] == traj.loss_mask


def test_filtering_deduplication_and_statistics(tiny_tokenizer, tmp_path, interpreter):
    result = run(tiny_tokenizer, tmp_path, interpreter, n=3)
    stats = result.stats
    assert stats["trajectories"] == 12 and stats["kept"] == 2
    # a scripted teacher is deterministic: the 2nd and 3rd rollouts are duplicates
    assert stats["dropped"] == {"duplicate": 4, "wrong": 3, "stopped:max_turns": 3}
    assert stats["stop_reasons"] == {"answered": 9, "max_turns": 3}
    # the looping teacher's third call is never run: max_turns stops the trajectory first
    assert stats["all"]["tool_statuses"] == {"success": 12, "error": 3}
    assert stats["all"]["tool/success_rate"] == 0.8
    assert stats["all"]["tool/calls_per_response"] == 1.25
    assert stats["kept_rows"]["tool_calls_histogram"] == {"1": 2}
    assert stats["samples_solved"] == 2
    everything = run(tiny_tokenizer, tmp_path, interpreter, keep="all", dedupe=False)
    assert len(everything.rows) == 4
    wrong = next(r for r in everything.rows if r["id"] == "error#0")
    assert (wrong["acc"], wrong["score"]) == (False, -1.0)
    assert "ZeroDivisionError" in wrong["messages"][2]["content"]
    assert run(tiny_tokenizer, tmp_path, interpreter, min_tool_calls=2).stats["dropped"] == {
        "too_few_tool_calls": 2, "wrong": 1, "stopped:max_turns": 1,
    }  # fmt: skip
    assert conversation_key([{"role": "user", "content": "a  b\n"}]) == conversation_key(
        [{"role": "user", "content": "a b"}]
    )


def write_tasks(path):
    rows = [
        {
            "prompt": s.messages,
            "data_source": s.data_source,
            "reward_model": {"ground_truth": s.ground_truth},
            "extra_info": {"index": s.id},
        }
        for s in tasks()
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_with_a_scripted_teacher(tmp_path, tiny_tokenizer, capsys):
    teacher, _ = load_teacher_policy(tmp_path)
    write_tasks(tmp_path / "tasks.jsonl")
    out = tmp_path / "sft.jsonl"
    code = main(
        [
            "data",
            "collect",
            "--teacher",
            f"scripted:{teacher}:teacher",
            "--tasks",
            str(tmp_path / "tasks.jsonl"),
            "--n",
            "2",
            "--out",
            str(out),
            "rollout.max_turns=3",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["mul#0", "long#0"]
    stats = json.loads((tmp_path / "sft.stats.json").read_text())
    assert stats["kept"] == 2 and stats["sft_check"] == "2 of 2 rows load with toolrl sft's loader"
    assert len(load_sft_examples([str(out)], tiny_tokenizer, 1 << 20).examples) == 2
    assert "tool success rate" in capsys.readouterr().out


def test_cli_with_a_served_teacher(tmp_path, tiny_tokenizer):
    """The teacher behind an OpenAI-compatible server, reached by URL (completions, token ids)."""
    _, policy = load_teacher_policy(tmp_path)
    write_tasks(tmp_path / "tasks.jsonl")
    out = tmp_path / "sft.jsonl"
    engine = ScriptedEngine(tiny_tokenizer, policy)
    with OpenAIServer(
        engine, tiny_tokenizer, model_name="teacher", max_model_len=4096
    ).start() as server:
        code = main(
            [
                "data",
                "collect",
                "--teacher",
                server.url,
                "--tokenizer",
                "tiny",
                "--tasks",
                str(tmp_path / "tasks.jsonl"),
                "--n",
                "1",
                "--out",
                str(out),
                "--keep",
                "all",
                "rollout.max_turns=3",
            ]
        )
    assert code == 0
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == ["error#0", "long#0", "loop#0", "mul#0"]
    assert rows["mul#0"]["messages"][2]["content"] == "42\n" and rows["mul#0"]["acc"] is True


def test_cli_errors(tmp_path, capsys):
    write_tasks(tmp_path / "tasks.jsonl")
    args = [
        "data",
        "collect",
        "--tasks",
        str(tmp_path / "tasks.jsonl"),
        "--out",
        str(tmp_path / "o.jsonl"),
    ]
    assert main([*args, "--teacher", "http://127.0.0.1:9"]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    assert main([*args, "--teacher", "scripted:nowhere.py:f"]) == 2
    assert "no such file nowhere.py" in capsys.readouterr().err
    assert (
        main([*args, "--teacher", "http://127.0.0.1:9", "--tokenizer", "tiny", "--timeout", "2"])
        == 2
    )
    assert (
        "cannot get an answer from the OpenAI-compatible server at http://127.0.0.1:9"
        in capsys.readouterr().err
    )
